"""Talking to upstream providers: the client with its retry policy (`client`), the
I/O seam under it (`transport`), the tolerant reader of their answers (`dialect`,
`values`) and the one classifier of their error texts (`classify`)."""

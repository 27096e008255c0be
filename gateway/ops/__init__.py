"""The operator's side: the `smm-gateway` command (`cli`), commands on the shared
state (`admin`), `route` and `catalog show` (`explain`), `catalog suggest`
(`suggest`) and JSON logging (`logs`)."""

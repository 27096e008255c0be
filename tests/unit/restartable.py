"""An embedded redis-server a test can stop and start again, for outage tests."""

from __future__ import annotations

from pathlib import Path

from gateway.state.embedded import EmbeddedRedis


class Server:
    """An embedded redis-server that can be stopped and started again on the same
    data directory and address (unix socket, or the same TCP port)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.current = EmbeddedRedis(data_dir)
        self.url = self.current.start()

    def stop(self) -> None:
        self.current.stop()

    def restart(self) -> None:
        self.current = EmbeddedRedis(self.data_dir, port=self.current.port)
        assert self.current.start() == self.url

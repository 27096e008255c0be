"""`smm-gateway demo` as a real process, for the operator and walk-through tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from gateway.state.embedded import free_port
from harness import ROOT, _stop


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_port() -> int:
    """A free port whose next two (the simulators') are free too."""
    while True:
        port = free_port()
        if port + 2 <= 65535 and _bindable(port + 1) and _bindable(port + 2):
            return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without REDIS_URL or the operator variables, plus `extra`."""
    drop = ("REDIS_URL", "SMM_GATEWAY_CONFIG", "SMM_GATEWAY_DATA")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


class Demo:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}/api/v2"

    def output(self) -> str:
        return self.log.read_text()

    def exports(self) -> dict[str, str]:
        """The variables of the `export` line the demo printed."""
        line = next(x for x in self.output().splitlines() if x.strip().startswith("export "))
        return dict(re.findall(r"(\w+)=(\S+)", line))


@contextmanager
def running_demo(data_dir: Path, cwd: Path = ROOT) -> Iterator[Demo]:
    port = demo_port()
    log = data_dir.parent / f"demo-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--port", str(port), "--data-dir",
             str(data_dir)], cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
            text=True)
    demo = Demo(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(demo.url, data={"key": "demo-key", "action": "services"},
                               timeout=2)
                if r.status_code == 200 and len(r.json()) == 4:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "demo did not come up:\n" + demo.output()
            assert proc.poll() is None, "demo exited:\n" + demo.output()
            time.sleep(0.2)
        yield demo
    finally:
        _stop(proc)

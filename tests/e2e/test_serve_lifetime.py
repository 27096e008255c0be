"""The life of a `smm-gateway serve` process and its workers, as an operator meets it.

- `kill -9` of a serve with several workers (uvicorn's and granian's): its workers
  end with it, and a serve started again at once on the same port and data dir
  comes up and serves its metrics.
- A process whose parent dies ends with it, through the kernel and through the
  parent-pid watch used where the kernel cannot be asked (`workers.end_with`).
- A taken port: one line naming it and `--port`, exit 2, no announcement; the
  announcement comes once the port accepts connections.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.state.embedded import free_port
from harness import ROOT, Gateway, Sim, _wait, base_config, start_gateway

DEADLINE_S = 20.0  # generous on a loaded machine: the workers end in well under a second


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a worker whose new parent does not reap it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> float:
    """Seconds until `condition()` held; fails after `timeout_s`."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.02)
    return time.monotonic() - began


class Workers(Gateway):
    """The harness's Gateway with `--workers 2` and a `--server`, from its own data dir,
    on one port across restarts."""

    def __init__(self, server: str, config: dict[str, Any], redis_url: str,
                 tmp: Path) -> None:
        self.server = server
        self.port = free_port()
        super().__init__(config, redis_url, tmp)

    def start(self) -> None:
        self.launch()
        self.ready()

    def launch(self) -> None:
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/v2"
        self.data_dir = self.tmp / "data"
        env = {**os.environ, "REDIS_URL": self.redis_url}
        self.proc = start_gateway(
            ["serve", "--config", str(self.config_path), "--port", str(self.port),
             "--workers", "2", "--server", self.server, "--data-dir", str(self.data_dir)],
            env, self.log_path)

    def ready(self) -> None:
        assert self.proc is not None
        _wait(f"{self.base}/readyz", self.proc, "gateway")
        self.http = httpx.Client(timeout=30)

    def both_serving(self) -> list[int]:
        """The serve's child processes, once both workers are ready: ready on 8 new
        connections in a row (the kernel hands each to either worker)."""
        in_a_row = 0
        deadline = time.monotonic() + DEADLINE_S
        while in_a_row < 8:
            assert time.monotonic() < deadline, "a worker never got ready"
            ok = httpx.get(f"{self.base}/readyz", timeout=10).status_code == 200
            in_a_row = in_a_row + 1 if ok else 0
        assert self.proc is not None
        return children(self.proc.pid)


@pytest.fixture(params=["uvicorn", "granian"])
def gateway(request: pytest.FixtureRequest, sims: tuple[Sim, Sim], fresh_redis: str,
            tmp_path: Path) -> Iterator[Workers]:
    a, b = sims
    a.reset()
    b.reset()
    gw = Workers(request.param, base_config(a, b), fresh_redis, tmp_path / "gw")
    try:
        yield gw
    finally:
        gw.stop()


def test_workers_end_with_a_killed_serve_and_a_restart_comes_up(gateway: Workers) -> None:
    gw = gateway
    assert gw.proc is not None
    first = gw.proc.pid
    workers = gw.both_serving()
    assert len(workers) >= 2, workers
    gw.proc.kill()  # SIGKILL: nothing of the serve runs
    gw.http.close()
    gw.launch()  # at once, same port and data dir
    took = wait_for(lambda: not any(running(w) for w in workers), "the workers ended")
    print(f"\n{gw.server}: the workers ended {took:.2f} s after the kill")
    gw.ready()  # the new serve waited for the port, then came up
    assert gw.call(action="balance")["currency"] == "USD"

    def counted() -> bool:  # (counted once the answer is sent: by either worker)
        scrape = httpx.get(f"{gw.base}/metrics", timeout=10)
        assert scrape.status_code == 200, scrape.text
        return 'action="balance"' in scrape.text

    wait_for(counted, "the balance request in the merged metrics")
    assert gw.proc is not None
    mine = gw.data_dir / "metrics" / str(gw.proc.pid)
    assert mine.is_dir()
    gw.stop()
    assert not mine.exists()
    # the killed serve's dir: kept while its workers could hold it, never used again
    left = [p.name for p in (gw.data_dir / "metrics").iterdir() if p.is_dir()]
    assert left in ([], [str(first)]), left


# --- end_with: a process ends with its parent -------------------------------------

PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1]])
time.sleep(3600)
"""

CHILD = """
import os, time
from gateway.ops import workers
if {without_kernel}:
    workers._parent_death_signal = lambda signum: False
workers.end_with(os.getppid())
print(os.getpid(), flush=True)
time.sleep(3600)
"""


@pytest.mark.parametrize("without_kernel", [False, True], ids=["prctl", "parent-pid watch"])
def test_a_worker_ends_with_its_parent(without_kernel: bool) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT,
                               CHILD.format(without_kernel=without_kernel)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    ready, _, _ = select.select([parent.stdout], [], [], DEADLINE_S)
    if not ready:
        parent.kill()
    line = parent.stdout.readline()  # its pid, once it has asked to end with its parent
    if not line.strip().isdigit():
        parent.kill()
        parent.wait()
        pytest.fail(f"the child did not start: {line!r}")
    child = int(line)
    try:
        assert running(child)
        parent.kill()
        parent.wait()
        took = wait_for(lambda: not running(child), "the child ended")
        print(f"ended {took:.2f} s after its parent")
    finally:
        parent.kill()
        parent.wait()
        if running(child):
            os.kill(child, signal.SIGKILL)


# --- the address --------------------------------------------------------------------

def serve(tmp: Path, sims: tuple[Sim, Sim], *argv: str) -> list[str]:
    """The command line of a serve over both simulators, its config and data in `tmp`."""
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump(base_config(*sims), sort_keys=False))
    return [sys.executable, "-m", "gateway", "serve", "--config", str(config),
            "--data-dir", str(tmp / "data"), *argv]


@pytest.mark.parametrize("server,workers", [("uvicorn", "1"), ("granian", "2")])
def test_a_taken_port_is_one_line_and_exit_2(server: str, workers: str, sims: tuple[Sim, Sim],
                                             fresh_redis: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            serve(tmp_path, sims, "--port", str(port), "--server", server, "--workers", workers),
            cwd=ROOT, env={**os.environ, "REDIS_URL": fresh_redis}, capture_output=True,
            text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "listening" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]


def test_the_announcement_comes_once_the_port_accepts(sims: tuple[Sim, Sim], fresh_redis: str,
                                                      tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        serve(tmp_path, sims, "--port", str(port), "--workers", "1"), cwd=ROOT,
        env={**os.environ, "REDIS_URL": fresh_redis}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"smm-gateway listening on http://127.0.0.1:{port}/api/v2"), line
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # accepted (it waits in the backlog until the app is up)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

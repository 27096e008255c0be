"""The ASGI server as a setting: `gateway.server` and `serve --server`, what each
server is given (`gateway.ops.servers`), and the granian app wrapper that cancels the
requests a shutdown has waited long enough for; how many workers (`--workers auto`);
the address taken before anything starts; the metrics dirs of serves sharing a data
dir (`gateway.ops.workers.metrics_dir`)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from granian.constants import HTTPModes, Interfaces

from gateway.config import diff, parse_settings
from gateway.errors import ConfigError
from gateway.ops import cli, servers, workers
from gateway.ops.arguments import parser
from gateway.ops.workers import usable_cpus
from gateway.state.embedded import free_port
from inprocess import config_text, make_settings


def serve_args(*argv: str) -> Any:
    return parser(None, "providers.yaml", "./data", "./data/demo").parse_args(["serve", *argv])


def test_serve_server_option() -> None:
    assert serve_args().server is None  # the config decides
    assert serve_args("--server", "granian").server == "granian"
    assert serve_args("--server", "uvicorn", "--workers", "2").server == "uvicorn"


def test_serve_refuses_an_unknown_server(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_args("--server", "hypercorn")
    assert exc.value.code == 2
    assert "invalid choice: 'hypercorn'" in capsys.readouterr().err


def test_main_hands_the_option_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cli, "serve", lambda *args: seen.append(args))
    cli.main(["serve", "--config", "c.yaml", "--server", "granian", "--workers", "3"])
    cli.main(["serve", "--config", "c.yaml"])
    assert [(s[0], s[3], s[6]) for s in seen] == [
        ("c.yaml", 3, "granian"), ("c.yaml", usable_cpus(), None)]  # --workers auto


def test_workers_auto_is_one_per_usable_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_args().workers == usable_cpus() == serve_args("--workers", "auto").workers
    assert serve_args("--workers", "1").workers == 1
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            serve_args("--workers", bad)
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize(("files", "expected"), [
    ({}, None),  # no cgroup files: the affinity mask
    ({"cpu.max": "max 100000\n"}, None),  # no quota
    ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage\n"}, None),
])
def test_usable_cpus_follows_the_cgroup_quota(tmp_path: Path, files: dict[str, str],
                                             expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == (affinity if expected is None else min(expected, affinity))


def test_the_setting_defaults_to_uvicorn_and_is_checked() -> None:
    assert make_settings().gateway.server == "uvicorn"
    assert make_settings(server="granian").gateway.server == "granian"
    with pytest.raises(ConfigError, match="gateway.server"):
        parse_settings(config_text(server="hypercorn"), env={})


def test_a_reload_lists_the_server_as_needing_a_restart() -> None:
    changes = diff(make_settings(), make_settings(server="granian"))
    assert changes.restart == ["gateway.server"]


def test_run_picks_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(servers, "run_granian", lambda *a: ran.append("granian"))
    monkeypatch.setattr(servers, "run_uvicorn", lambda *a: ran.append("uvicorn"))
    settings = make_settings()
    for name in ("granian", "uvicorn"):
        with servers.listen("127.0.0.1", 0) as sock:
            servers.run(name, settings, sock, 1, "c.yaml", lambda: None)
    assert ran == ["granian", "uvicorn"]


def test_granian_options() -> None:
    options = servers.granian_options(make_settings(header_timeout_s=1.5), "0.0.0.0", 9000)
    assert (options["address"], options["port"]) == ("0.0.0.0", 9000)
    assert options["interface"] == Interfaces.ASGI and options["http"] == HTTPModes.http1
    assert options["websockets"] is False and options["log_access"] is False
    assert options["http1_settings"].header_read_timeout == 1500
    assert options["http1_settings"].keep_alive is True
    tiny = servers.granian_options(make_settings(header_timeout_s=0.0001), "127.0.0.1", 9000)
    assert tiny["http1_settings"].header_read_timeout == 1  # 0 would be no time at all


class Slow:
    """An ASGI app whose requests wait until told; its lifespan says it started."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.lifespans: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.lifespans.append("called")
            return
        self.started.set()
        await asyncio.sleep(3600)


@pytest.mark.anyio
async def test_tracked_cancels_only_what_a_shutdown_waited_for() -> None:
    tracked = servers.Tracked()
    tracked.app = app = Slow()
    await tracked({"type": "lifespan"}, None, None)
    assert app.lifespans == ["called"] and not tracked.tasks
    request = asyncio.create_task(tracked({"type": "http"}, None, None))
    await app.started.wait()
    assert len(tracked.tasks) == 1
    tracked.cancel()
    await request  # ended quietly: granian sees the app return
    assert not tracked.tasks and not request.cancelled()
    other = servers.Tracked()
    other.app = Slow()
    elsewhere = asyncio.create_task(other({"type": "http"}, None, None))
    await asyncio.sleep(0)
    elsewhere.cancel()  # not cancelled by a shutdown: the cancellation goes on
    with pytest.raises(asyncio.CancelledError):
        await elsewhere


def test_granian_exits_3_when_the_app_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuses(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no Redis"})

    def build(self: servers.Tracked) -> servers.Tracked:
        self.app = refuses
        return self

    monkeypatch.setattr(servers.Tracked, "build", build)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        servers.run_granian(make_settings(), "127.0.0.1", free_port(), 1, "c.yaml",
                            lambda: None)
    assert exc.value.code == 3
    assert signal.getsignal(signal.SIGTERM) is before  # put back


def test_a_taken_port_is_named_with_the_option_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(servers.CannotListen) as exc:
            servers.listen("127.0.0.1", port, wait_s=0)
    message = str(exc.value)
    assert f"127.0.0.1:{port}" in message and "--port" in message
    assert "\n" not in message


def test_a_port_freed_while_waiting_is_taken() -> None:
    """The workers of a serve killed a moment ago hold its port for a moment."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    threading.Timer(0.3, taken.close).start()
    with servers.listen("127.0.0.1", port, wait_s=30) as sock:
        assert sock.getsockname()[1] == port


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_metrics_dir_in_use_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dir named for a serve that is gone, whose lock a worker still holds (this test
    holds it), is not taken from under that worker; once it is let go, it is removed."""
    monkeypatch.delenv(workers.ENV_METRICS, raising=False)
    used = tmp_path / "metrics" / str(dead_pid())
    used.mkdir(parents=True)
    (used / workers.LOCK).touch()
    (used / "counter_1.db").touch()
    holder = os.open(used / workers.LOCK, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_SH)
    try:
        with workers.metrics_dir(str(tmp_path), 2):
            mine = Path(os.environ[workers.ENV_METRICS])
            assert mine.name == str(os.getpid()) and (mine / workers.LOCK).exists()
            assert (used / "counter_1.db").exists()
        assert not mine.exists()  # removed at exit: nobody else held it
        assert (used / "counter_1.db").exists()
    finally:
        os.close(holder)
    with workers.metrics_dir(str(tmp_path), 2):
        assert not used.exists()  # let go: removed at the next start
    stale = tmp_path / "metrics" / str(dead_pid())  # a dir without a lock: by its pid
    stale.mkdir()
    alive = tmp_path / "metrics" / str(os.getppid())
    alive.mkdir()
    with workers.metrics_dir(str(tmp_path), 2):
        assert not stale.exists() and alive.exists()

"""Starts gateway processes for the end-to-end tests, cheaply.

Every e2e test runs its own `smm-gateway serve` process; most of such a start is
Python importing litestar, aiohttp, redis-py and uvicorn. This process imports
them once, then forks: each request on stdin (one JSON line: argv, env, cwd, log
path) becomes a fresh child that runs `gateway.ops.cli.main(argv)`, exactly what
`python -m gateway serve ...` runs, and the child's pid is written back. The
children are real server processes on real sockets; nothing of the gateway is
shared between them (no event loop, connection or task exists before the fork).

`E2E_FORK=0` makes the harness start every gateway as a new interpreter instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

import uvicorn
import uvicorn.loops.uvloop
import uvicorn.protocols.http.httptools_impl  # noqa: F401

import gateway.edge.app  # noqa: F401
from gateway.ops.cli import main


def _child(request: dict[str, Any]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.close(nothing)
        main(request["argv"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()

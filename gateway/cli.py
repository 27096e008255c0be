"""The `smm-gateway` command: serve, demo, simulate, check-config, orders."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError

ENV_CONFIG = "SMM_GATEWAY_CONFIG"
ENV_REDIS = "REDIS_URL"
DEFAULT_CONFIG = "providers.yaml"
DEFAULT_DATA = "./data"


def app_factory() -> Any:
    """uvicorn factory for worker processes: config path and Redis URL come from env."""
    from gateway import logs
    from gateway.app import create_app

    settings = load_settings(os.environ[ENV_CONFIG])
    logs.setup(settings.gateway.log_level)
    return create_app(settings, os.environ[ENV_REDIS])


@contextmanager
def redis_url(data_dir: str) -> Iterator[str]:
    """REDIS_URL if set, else an embedded redis-server for the duration."""
    url = os.environ.get(ENV_REDIS)
    if url:
        yield url
        return
    from gateway.redis_server import EmbeddedRedis

    server = EmbeddedRedis(Path(data_dir) / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks (embedded Redis, simulators) run.

    uvicorn restores the previous handler after its graceful shutdown and re-raises
    the signal; with the default handler the process would die on the spot.
    """
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def serve(config: str, host: str, port: int, workers: int, data_dir: str) -> None:
    import uvicorn

    settings = _load(config)
    _exit_on_sigterm()
    with redis_url(data_dir) as url:
        os.environ[ENV_CONFIG] = str(Path(config).resolve())
        os.environ[ENV_REDIS] = url
        print(f"smm-gateway listening on http://{host}:{port}/api/v2 "
              f"({len(settings.providers)} providers, {len(settings.services)} services)",
              flush=True)
        uvicorn.run("gateway.cli:app_factory", factory=True, host=host, port=port,
                    workers=workers if workers > 1 else None, loop="uvloop",
                    http="httptools", lifespan="on", access_log=False, log_config=None,
                    timeout_graceful_shutdown=10)


def check_config(path: str) -> int:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(settings.clients)} clients, {len(settings.providers)} providers,"
          f" {len(settings.services)} services)")
    return 0


def orders_unknown(data_dir: str) -> int:
    from gateway.store import Store, connect

    async def run(url: str) -> int:
        store = Store(connect(url))
        try:
            orders = await store.unknown_orders()
        finally:
            await store.aclose()
        if not orders:
            print("no orders in an unknown state")
            return 0
        print(f"{'order':>10}  {'state':<11}  {'client':<12}  {'service':>7}  "
              f"{'provider':<14}  {'upstream svc':<12}  {'quantity':>8}  {'charge':>10}  "
              f"created  link")
        for oid, r in sorted(orders.items()):
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created))
            print(f"{oid:>10}  {r.state:<11}  {r.client:<12}  {r.service:>7}  "
                  f"{r.provider:<14}  {r.upstream_service:<12}  {r.quantity:>8}  "
                  f"{r.charge!s:>10}  {created}  {r.link}")
        return 0

    with redis_url(data_dir) as url:
        return asyncio.run(run(url))


def demo(port: int, data_dir: str) -> None:
    from gateway.demo import write_demo

    data = Path(data_dir)
    config, sims = write_demo(data, port)
    _exit_on_sigterm()
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.simulator", *args])
             for args in sims]
    try:
        print(f"demo: two simulated providers started; config written to {config}")
        print("demo: client key: demo-key")
        print(f"demo: try  curl -s http://127.0.0.1:{port}/api/v2 "
              "-d key=demo-key -d action=services", flush=True)
        serve(str(config), "127.0.0.1", port, 1, data_dir)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from gateway import simulator

        simulator.main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="smm-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the gateway")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-dir", default=DEFAULT_DATA,
                   help="embedded Redis data (used only when REDIS_URL is not set)")

    p = sub.add_parser("demo", help="two simulated providers and the gateway, ready to curl")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--data-dir", default="./data/demo")

    sub.add_parser("simulate", help="run a provider simulator (see `simulate --help`)")

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")

    p = sub.add_parser("orders", help="inspect orders")
    osub = p.add_subparsers(dest="orders_command", required=True)
    q = osub.add_parser("unknown", help="orders whose upstream outcome is not known")
    q.add_argument("--data-dir", default=DEFAULT_DATA)

    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.config, args.host, args.port, args.workers, args.data_dir)
    elif args.command == "demo":
        demo(args.port, args.data_dir)
    elif args.command == "check-config":
        raise SystemExit(check_config(args.file))
    elif args.command == "orders":
        raise SystemExit(orders_unknown(args.data_dir))


if __name__ == "__main__":
    main()

"""The `smm-gateway` command: serve, demo, simulate, check-config, orders."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.state.connect import AnyRedis

ENV_CONFIG = "SMM_GATEWAY_CONFIG"
ENV_REDIS = "REDIS_URL"
DEFAULT_CONFIG = "providers.yaml"
DEFAULT_DATA = "./data"


def app_factory() -> Any:
    """uvicorn factory for worker processes: config path and Redis URL come from env."""
    from gateway.edge.app import create_app
    from gateway.ops import logs

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
    from gateway.state.embedded import EmbeddedRedis, running_url

    running = running_url(Path(data_dir) / "redis")
    if running:  # a gateway is serving from this data dir: share its Redis
        yield running
        return
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
        uvicorn.run("gateway.ops.cli:app_factory", factory=True, host=host, port=port,
                    workers=workers if workers > 1 else None, loop="uvloop",
                    http="httptools", lifespan="on", access_log=False, log_config=None,
                    proxy_headers=False, server_header=False,
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


def admin(data_dir: str, command: Callable[[AnyRedis], Awaitable[list[str]]]) -> int:
    """Run one operator command against the shared Redis and print its lines."""
    from gateway.ops.admin import AdminError
    from gateway.state.connect import connect

    async def run(url: str) -> int:
        redis = connect(url)
        try:
            lines = await command(redis)
        except AdminError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            await redis.aclose()
        print("\n".join(lines))
        return 0

    with redis_url(data_dir) as url:
        return asyncio.run(run(url))


def catalog_command(args: argparse.Namespace) -> int:
    """`route` and `catalog ...`: they need the config as well as the shared Redis."""
    settings = _load(args.config)
    if args.command == "catalog" and args.sub == "suggest":
        return asyncio.run(suggest(settings, args.first_id))

    async def confirm(redis: AnyRedis) -> list[str]:
        from gateway.state.catalogs import Catalogs

        if await Catalogs(redis).confirm_rate(args.service):
            return [f"service {args.service}: the current rate will be advertised "
                    "(every replica within a few seconds)"]
        return [f"service {args.service}: no rate on record; nothing to confirm"]

    if args.command == "catalog" and args.sub == "confirm":
        return admin(args.data_dir, confirm)

    async def explain(url: str) -> list[str]:
        from gateway.ops.explain import route, show
        from gateway.wiring import open_resources

        async with open_resources(settings, url, serving=False) as r:
            if args.command == "route":
                return await route(r, args.service, args.quantity, args.runs)
            return await show(r)

    with redis_url(args.data_dir) as url:
        print("\n".join(asyncio.run(explain(url))))
    return 0


async def suggest(settings: Settings, first_id: int) -> int:
    from gateway.errors import ProviderError
    from gateway.money import Converter
    from gateway.ops.suggest import group, progress, to_yaml
    from gateway.upstream.client import ProviderClient

    clients = {p.name: ProviderClient.from_settings(p, settings.gateway.transport)
               for p in settings.providers}
    lists = {}
    try:
        progress(0, len(clients), "")
        for n, (name, client) in enumerate(clients.items(), start=1):
            try:
                lists[name] = await client.services()
            except ProviderError as exc:
                print(f"\n{name}: {exc.message}", file=sys.stderr)
            progress(n, len(clients), name)
    finally:
        for client in clients.values():
            await client.aclose()
    groups = group(lists, Converter(settings.gateway),
                   {p.name: p.currency for p in settings.providers})
    print(to_yaml(groups, settings.gateway.currency, first_id), end="")
    return 0


def demo(port: int, data_dir: str) -> None:
    from gateway.sim.demo import write_demo

    data = Path(data_dir)
    config, sims = write_demo(data, port)
    _exit_on_sigterm()
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.sim", *args])
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
        from gateway.sim.cli import main as simulate

        simulate(argv[1:])
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

    p = sub.add_parser("orders", help="orders whose outcome is not known, and resolving them")
    osub = p.add_subparsers(dest="sub", required=True)
    q = osub.add_parser("unknown", help="orders whose upstream outcome is not known")
    q.add_argument("--data-dir", default=DEFAULT_DATA)
    q = osub.add_parser("resolve", help="settle an unknown order")
    q.add_argument("order", type=int)
    way = q.add_mutually_exclusive_group(required=True)
    way.add_argument("--placed", metavar="UPSTREAM_ID",
                     help="the provider has it, under this order id")
    way.add_argument("--not-placed", action="store_true",
                     help="the provider never took it: release the client's money")
    q.add_argument("--data-dir", default=DEFAULT_DATA)

    p = sub.add_parser("keys", help="client keys, balances and ledgers")
    ksub = p.add_subparsers(dest="sub", required=True)
    q = ksub.add_parser("create", help="a new client; prints its key once")
    q.add_argument("--name", required=True)
    q.add_argument("--mode", choices=["ledger", "operator"], default="ledger")
    q.add_argument("--markup", type=Decimal, default=None)
    q.add_argument("--credit", default=None, help="initial prepaid balance")
    q.add_argument("--services", default=None, help="comma separated service ids it may use")
    q.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    q.add_argument("--burst", type=int, default=None)
    q.add_argument("--dup-window", type=float, default=0.0,
                   help="seconds in which an identical add answers the first order")
    ksub.add_parser("list", help="every client")
    for name, text in (("disable", "the key stops working"), ("enable", "the key works again"),
                       ("rotate", "a new key; the old one stops working"),
                       ("history", "the client's ledger")):
        ksub.add_parser(name, help=text).add_argument("name")
    q = ksub.add_parser("topup", help="add (or with a negative amount, take) money")
    q.add_argument("name")
    q.add_argument("amount")
    q.add_argument("--note", default="")
    q = ksub.add_parser("check", help="prove each balance equals the sum of its ledger")
    q.add_argument("name", nargs="?")
    for q in ksub.choices.values():
        q.add_argument("--data-dir", default=DEFAULT_DATA)

    p = sub.add_parser("route", help="explain where an order would go now, and why")
    p.add_argument("service", type=int)
    p.add_argument("quantity", type=int)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--data-dir", default=DEFAULT_DATA)

    p = sub.add_parser("catalog", help="the gateway catalog: show, suggest, confirm")
    csub = p.add_subparsers(dest="sub", required=True)
    csub.add_parser("show", help="every service, its candidates and the next pick")
    q = csub.add_parser("suggest", help="propose equivalent services across providers (YAML)")
    q.add_argument("--first-id", type=int, default=1)
    q = csub.add_parser("confirm", help="accept a held rate change of a service")
    q.add_argument("service", type=int)
    for q in csub.choices.values():
        q.add_argument("--config", default=DEFAULT_CONFIG)
        q.add_argument("--data-dir", default=DEFAULT_DATA)

    args = parser.parse_args(argv)
    if args.command in ("route", "catalog"):
        raise SystemExit(catalog_command(args))
    if args.command == "serve":
        serve(args.config, args.host, args.port, args.workers, args.data_dir)
    elif args.command == "demo":
        demo(args.port, args.data_dir)
    elif args.command == "check-config":
        raise SystemExit(check_config(args.file))
    elif args.command in ("orders", "keys"):
        raise SystemExit(admin(args.data_dir, _admin_command(args)))


def _admin_command(args: argparse.Namespace) -> Callable[[AnyRedis], Awaitable[list[str]]]:
    from gateway.ops import admin as a

    if args.command == "orders":
        if args.sub == "unknown":
            return a.orders_unknown
        return lambda r: a.orders_resolve(r, args.order, args.placed)
    sub = args.sub
    if sub == "create":
        services = ([int(x) for x in args.services.split(",") if x.strip()]
                    if args.services else None)
        credit = a.amount(args.credit) if args.credit else None
        return lambda r: a.keys_create(r, args.name, args.mode, args.markup, credit, services,
                                       args.rate_limit, args.burst, args.dup_window)
    if sub == "list":
        return a.keys_list
    if sub in ("disable", "enable"):
        return lambda r: a.keys_set_active(r, args.name, sub == "enable")
    if sub == "rotate":
        return lambda r: a.keys_rotate(r, args.name)
    if sub == "topup":
        return lambda r: a.keys_topup(r, args.name, a.amount(args.amount), args.note)
    if sub == "history":
        return lambda r: a.keys_history(r, args.name)

    async def check(r: AnyRedis) -> list[str]:
        ok, lines = await a.keys_check(r, args.name)
        if not ok:
            raise a.AdminError("\n".join(lines))
        return lines

    return check


if __name__ == "__main__":
    main()

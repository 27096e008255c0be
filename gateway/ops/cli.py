"""The `smm-gateway` command: serve, demo, simulate, check-config, orders, keys, catalog.

`--config` and `--data-dir` default to $SMM_GATEWAY_CONFIG and $SMM_GATEWAY_DATA,
then to `providers.yaml` and `./data`. Operator commands use REDIS_URL, or the
embedded Redis of the gateway serving from the data dir (or its stored data); they
never start an empty Redis on a directory that holds no gateway data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Settings, check_file
from gateway.ops.factory import DEFAULT_DATA, ENV_CONFIG, ENV_DATA, ENV_REDIS

if TYPE_CHECKING:
    from gateway.state.connect import AnyRedis

DEFAULT_CONFIG = "providers.yaml"
DEMO_DATA = "./data/demo"
# what an embedded Redis leaves in its directory once it has run there
_REDIS_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb")


class NoGatewayData(Exception):
    """An operator command pointed at a data dir that no gateway ever used."""


def default_config() -> str:
    return os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG


def default_data() -> str:
    return os.environ.get(ENV_DATA) or DEFAULT_DATA


@contextmanager
def redis_url(data_dir: str, create: bool = True) -> Iterator[str]:
    """REDIS_URL if set, else the embedded redis-server of `data_dir` for the duration.

    `create=False` (operator commands): a data dir where no embedded Redis ever ran
    is an error (`NoGatewayData`), not a new empty Redis.
    """
    url = os.environ.get(ENV_REDIS)
    if url:
        yield url
        return
    from gateway.state.embedded import EmbeddedRedis, running_url

    where = Path(data_dir) / "redis"
    running = running_url(where)
    if running:  # a gateway is serving from this data dir: share its Redis
        yield running
        return
    if not create and not any((where / name).exists() for name in _REDIS_FILES):
        raise NoGatewayData(
            f"no gateway data in {data_dir} (no gateway has run there) and REDIS_URL is "
            f"not set: give --data-dir (or set {ENV_DATA}) to the directory of a gateway "
            f"that has run (`make run`: data/demo), or set REDIS_URL")
    server = EmbeddedRedis(where)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _load(path: str) -> Settings:
    """The config, or every problem in it on stderr and exit 2 (`serve`, `route`, ...)."""
    settings, problems = check_file(path)
    if settings is None:
        for line in problems:
            print(f"config error: {line}", file=sys.stderr)
        raise SystemExit(2)
    return settings


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks (embedded Redis, simulators) run.

    uvicorn restores the previous handler after its graceful shutdown and re-raises
    the signal (granian's embedded server: `gateway.ops.servers` restores it); with
    the default handler the process would die on the spot.
    SIGHUP (a config reload, `gateway.edge.reload`) is ignored until the app listens
    for it: it must never kill a gateway that is still starting (workers inherit it).
    """
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def serve(config: str, host: str, port: int, workers: int, data_dir: str,
          argv: Sequence[str] = (), server: str | None = None) -> None:
    """`server`: "uvicorn" or "granian" (`serve --server`); None: the config's
    `gateway.server` (`gateway.ops.servers`). The address is taken first: one that
    cannot be had is one line on stderr and exit 2, before anything starts."""
    from gateway.edge.memory import system_allocator
    from gateway.ops.servers import CannotListen, listen, run
    from gateway.ops.workers import metrics_dir

    settings = _load(config)
    system_allocator(argv)
    _exit_on_sigterm()
    try:
        sock = listen(host, port)
    except CannotListen as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None

    def announce() -> None:
        print(f"smm-gateway listening on http://{host}:{port}/api/v2 "
              f"({len(settings.providers)} providers, {len(settings.services)} services)",
              flush=True)

    with sock, redis_url(data_dir) as url:
        os.environ[ENV_CONFIG] = str(Path(config).resolve())
        os.environ[ENV_REDIS] = url
        os.environ[ENV_DATA] = str(Path(data_dir).resolve())
        with metrics_dir(data_dir, workers):
            run(server or settings.gateway.server, settings, sock, workers,
                os.environ[ENV_CONFIG], announce)


def check_config(path: str) -> int:
    """Every problem `serve` would refuse to start with, one `file:line: message` each."""
    settings, problems = check_file(path)
    if settings is None:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"{path}: {len(problems)} error{'s' if len(problems) > 1 else ''}",
              file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(settings.clients)} clients, {len(settings.providers)} providers,"
          f" {len(settings.services)} services)")
    return 0


def _with_redis(data_dir: str, run: Callable[[str], int]) -> int:
    try:
        with redis_url(data_dir, create=False) as url:
            return run(url)
    except NoGatewayData as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


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

    return _with_redis(data_dir, lambda url: asyncio.run(run(url)))


def _known_service(settings: Settings, service_id: int) -> bool:
    if any(s.id == service_id for s in settings.services):
        return True
    return bool(settings.mirror) and service_id >= settings.gateway.mirror_id_start


def catalog_command(args: argparse.Namespace) -> int:
    """`route` and `catalog ...`: they need the config as well as the shared Redis."""
    settings = _load(args.config)
    if args.command == "catalog" and args.sub == "suggest":
        return asyncio.run(suggest(settings, args.first_id))
    if args.command == "catalog" and args.sub == "confirm":
        if not _known_service(settings, args.service):
            print(f"error: no service {args.service} in {args.config}", file=sys.stderr)
            return 1
        return admin(args.data_dir, lambda redis: _confirm(redis, args.service))

    async def explain(url: str) -> int:
        from gateway.ops.explain import route, show
        from gateway.wiring import open_resources

        async with open_resources(settings, url, serving=False) as r:
            if args.command == "route":
                lines = await route(r, args.service, args.quantity, args.runs)
            else:
                lines = await show(r)
        print("\n".join(lines))
        return 0

    return _with_redis(args.data_dir, lambda url: asyncio.run(explain(url)))


async def _confirm(redis: AnyRedis, service_id: int) -> list[str]:
    from gateway.admin.operations import confirm_rate
    from gateway.state.catalogs import Catalogs

    return [await confirm_rate(Catalogs(redis), service_id)]


async def suggest(settings: Settings, first_id: int | None) -> int:
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
    taken = {s.id for s in settings.services}
    start = first_id if first_id is not None else max(taken, default=0) + 1
    print(to_yaml(groups, settings.gateway.currency, start, taken, settings.gateway.markup),
          end="")
    return 0


def _operator_hint(config: Path, data: Path) -> list[str]:
    """How to reach the running demo with the operator commands, from another shell."""
    lines = ["demo: operator commands from another shell (e.g. `smm-gateway keys list`):"]
    if sys.prefix != sys.base_prefix:
        activate = Path(sys.prefix) / "bin" / "activate"
        try:
            activate = activate.relative_to(Path.cwd())
        except ValueError:
            pass
        lines.append(f"    source {activate}")
    lines.append(f"    export {ENV_CONFIG}={config.resolve()} {ENV_DATA}={data.resolve()}")
    return lines


def demo(port: int, data_dir: str) -> None:
    from gateway.sim.demo import DEMO_ADMIN_KEY, clean_data_dir, write_demo
    from gateway.state.embedded import running_url

    data = Path(data_dir)
    if running_url(data / "redis"):
        print(f"demo: a demo is already running on {data_dir}", file=sys.stderr)
        raise SystemExit(1)
    try:
        wiped = clean_data_dir(data)
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    config, sims = write_demo(data, port)
    _exit_on_sigterm()
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.sim", *args])
             for args in sims]
    try:
        if wiped:
            print(f"demo: starting clean: removed the previous demo's data in {data_dir} "
                  "(its orders, keys and simulated providers are gone)")
        print(f"demo: two simulated providers started; config written to {config}")
        print("demo: client key: demo-key")
        print(f"demo: dashboard  http://127.0.0.1:{port}/admin/  (admin key: {DEMO_ADMIN_KEY})")
        print(f"demo: try  curl -s http://127.0.0.1:{port}/api/v2 "
              "-d key=demo-key -d action=services")
        print("\n".join(_operator_hint(config, data)), flush=True)
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
    from gateway.ops.arguments import parser

    args = parser(__doc__, default_config(), default_data(), DEMO_DATA).parse_args(argv)
    if args.command in ("route", "catalog"):
        raise SystemExit(catalog_command(args))
    if args.command == "serve":
        serve(args.config, args.host, args.port, args.workers, args.data_dir, argv,
              args.server)
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
        if args.sub == "show":
            from gateway.ops.show import order_lines

            return lambda r: order_lines(r, args.order)
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

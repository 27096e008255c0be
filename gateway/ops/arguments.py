"""The `smm-gateway` command line: every subcommand and option, each with its help."""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import get_args

from gateway.config import ServerName

CONFIG_HELP = "the config file (default: $SMM_GATEWAY_CONFIG, else providers.yaml; now %(default)s)"
DATA_HELP = ("the gateway's data directory, whose embedded Redis is used when REDIS_URL is "
             "not set (default: $SMM_GATEWAY_DATA, else ./data; now %(default)s)")


def worker_count(text: str) -> int:
    """`--workers`: a count, or `auto` for one per usable CPU."""
    if text.strip().lower() == "auto":
        from gateway.ops.workers import usable_cpus

        return usable_cpus()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or auto: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return count


def _config(p: argparse.ArgumentParser, config: str) -> None:
    p.add_argument("--config", default=config, metavar="FILE", help=CONFIG_HELP)


def _data(p: argparse.ArgumentParser, data: str) -> None:
    p.add_argument("--data-dir", default=data, metavar="DIR", help=DATA_HELP)


def _serving(sub: argparse._SubParsersAction[argparse.ArgumentParser], config: str,
             data: str, demo_data: str) -> None:
    p = sub.add_parser("serve", help="serve the gateway")
    _config(p, config)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (%(default)s)")
    p.add_argument("--workers", type=worker_count, default="auto", metavar="N|auto",
                   help="worker processes, all over one Redis; auto (the default): one per "
                        "CPU this process may use (its affinity, capped by a cgroup CPU "
                        "limit)")
    p.add_argument("--server", choices=get_args(ServerName), default=None,
                   help="the ASGI server (default: the config's gateway.server, else uvicorn)")
    _data(p, data)

    p = sub.add_parser("demo", help="two simulated providers and the gateway, ready to curl; "
                       "starts clean every time")
    p.add_argument("--port", type=int, default=8080,
                   help="the gateway's port; the simulators take the next two (%(default)s)")
    p.add_argument("--data-dir", default=demo_data, metavar="DIR",
                   help="the demo's own directory, emptied at every start (%(default)s)")

    sub.add_parser("simulate", help="run a provider simulator (see `simulate --help`)")

    p = sub.add_parser("check-config", help="validate a config: every error, with its line")
    p.add_argument("file", nargs="?", default=config,
                   help="the config file (default: $SMM_GATEWAY_CONFIG, else providers.yaml)")


def _orders(sub: argparse._SubParsersAction[argparse.ArgumentParser], data: str) -> None:
    p = sub.add_parser("orders", help="one order's history; orders whose outcome is not "
                       "known, and resolving them")
    osub = p.add_subparsers(dest="sub", required=True)
    q = osub.add_parser("unknown", help="orders whose upstream outcome is not known")
    _data(q, data)
    q = osub.add_parser("show", help="one order: routing, money and status history")
    q.add_argument("order", type=int, help="the gateway's order id")
    _data(q, data)
    q = osub.add_parser("resolve", help="settle an unknown order")
    q.add_argument("order", type=int, help="the gateway's order id")
    way = q.add_mutually_exclusive_group(required=True)
    way.add_argument("--placed", metavar="UPSTREAM_ID",
                     help="the provider has it, under this order id")
    way.add_argument("--not-placed", action="store_true",
                     help="the provider never took it: release the client's money")
    _data(q, data)


def _keys(sub: argparse._SubParsersAction[argparse.ArgumentParser], data: str) -> None:
    p = sub.add_parser("keys", help="client keys, balances and ledgers")
    ksub = p.add_subparsers(dest="sub", required=True)
    q = ksub.add_parser("create", help="a new client; prints its key once")
    q.add_argument("--name", required=True, help="the client's name (unique)")
    q.add_argument("--mode", choices=["ledger", "operator"], default="ledger",
                   help="ledger: a prepaid balance; operator: balance = upstreams' sum "
                        "(%(default)s)")
    q.add_argument("--markup", type=Decimal, default=None,
                   help="multiplier on the gateway's rates (default: none, the gateway's)")
    q.add_argument("--credit", default=None, help="initial prepaid balance")
    q.add_argument("--services", default=None, help="comma separated service ids it may use")
    q.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    q.add_argument("--burst", type=int, default=None,
                   help="requests allowed at once over the rate (default: the rate)")
    q.add_argument("--dup-window", type=float, default=0.0,
                   help="seconds in which an identical add answers the first order")
    ksub.add_parser("list", help="every client")
    for name, text in (("disable", "the key stops working"), ("enable", "the key works again"),
                       ("rotate", "a new key; the old one stops working"),
                       ("history", "the client's ledger")):
        ksub.add_parser(name, help=text).add_argument("name", help="the client's name")
    q = ksub.add_parser("topup", help="add (or with a negative amount, take) money")
    q.add_argument("name", help="the client's name")
    q.add_argument("amount", help="in the gateway currency; negative: an adjustment")
    q.add_argument("--note", default="", help="kept in the ledger entry")
    q = ksub.add_parser("check", help="prove each balance equals the sum of its ledger")
    q.add_argument("name", nargs="?", help="one client (default: every ledger client)")
    for q in ksub.choices.values():
        _data(q, data)


def _catalog(sub: argparse._SubParsersAction[argparse.ArgumentParser], config: str,
             data: str) -> None:
    p = sub.add_parser("route", help="explain where an order would go now, and why")
    p.add_argument("service", type=int, help="the gateway's service id")
    p.add_argument("quantity", type=int, help="the order's quantity (per run)")
    p.add_argument("--runs", type=int, default=None, help="drip-feed runs")
    _config(p, config)
    _data(p, data)

    p = sub.add_parser("catalog", help="the gateway catalog: show, suggest, confirm")
    csub = p.add_subparsers(dest="sub", required=True)
    csub.add_parser("show", help="every service, its candidates and the next pick")
    q = csub.add_parser("suggest", help="propose equivalent services across providers (YAML)")
    q.add_argument("--first-id", type=int, default=None,
                   help="first id to propose (default: above the highest configured id); "
                        "configured ids are always skipped")
    q = csub.add_parser("confirm", help="accept a held rate change of a service")
    q.add_argument("service", type=int, help="the gateway's service id")
    for q in csub.choices.values():
        _config(q, config)
        _data(q, data)


def parser(description: str | None, config: str, data: str,
           demo_data: str) -> argparse.ArgumentParser:
    """The parser, with `--config` / `--data-dir` defaulting to `config` / `data`."""
    top = argparse.ArgumentParser(prog="smm-gateway", description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    _serving(sub, config, data, demo_data)
    _orders(sub, data)
    _keys(sub, data)
    _catalog(sub, config, data)
    return top

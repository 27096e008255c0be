"""``python -m gateway.sim`` / ``smm-gateway simulate``: run one simulated provider."""

from __future__ import annotations

import argparse
import contextlib
from decimal import Decimal

from gateway.sim.catalog import load_catalog
from gateway.sim.options import (
    DEFAULT_RETRY_AFTER_S,
    DIALECTS,
    FAULTS,
    SimOptions,
    check_retry_after,
)
from gateway.sim.server import serve


def _retry_after(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return check_retry_after(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 or 'none': {text!r}") from exc


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1: {text!r}")
    return n


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: ``python -m gateway.sim --port 9001``."""
    parser = argparse.ArgumentParser(
        prog="smm-simulator", description="Simulated SMM API v2 provider."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=9001, help="port to listen on (%(default)s)")
    parser.add_argument("--dialect", choices=DIALECTS, default="toksmm",
                        help="whose answer shapes to speak (%(default)s)")
    parser.add_argument("--catalog", metavar="FILE",
                        help="JSON (or .yaml) list of services, in either dialect's shape, "
                             "with optional behaviour fields such as stall_rate "
                             "(default: a built-in catalog)")
    parser.add_argument("--balance", type=Decimal, default=Decimal(1000),
                        help="the account's starting balance (%(default)s)")
    parser.add_argument("--currency", default="USD",
                        help="currency of the balance and rates (%(default)s)")
    parser.add_argument("--key", default=None, help="required API key (default: any)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="added before every /api/v2 answer (%(default)s)")
    parser.add_argument("--fault", choices=FAULTS, default=None,
                        help="answer with an HTML page (502), a 500, a 429 (rate limited) or "
                             "503 with a Retry-After header, never (hang), or drop the "
                             "connection")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=None,
        help="fraction of requests hit by --fault (default 1.0 with --fault, else 0)",
    )
    parser.add_argument("--fault-action", metavar="ACTION", default=None,
                        help="fault only requests of this action, e.g. status "
                             "(default: every action)")
    parser.add_argument("--fault-count", metavar="N", type=_count, default=None,
                        help="clear the fault after it has hit N requests (default: never)")
    parser.add_argument("--retry-after", metavar="SECONDS", type=_retry_after,
                        default=DEFAULT_RETRY_AFTER_S,
                        help="the Retry-After header of the 429 and 503 faults, in seconds; "
                             "'none' sends none (%(default)g)")
    parser.add_argument("--order-start", type=int, default=1,
                        help="first order id (and refill id) handed out (%(default)s)")
    parser.add_argument("--progress-s", type=float, default=2.0,
                        help="seconds from Pending through In progress to Completed "
                             "(%(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the draws that decide which orders stall or end "
                             "Partial (%(default)s)")
    args = parser.parse_args(argv)
    fault_rate = args.fault_rate
    if fault_rate is None:
        fault_rate = 1.0 if args.fault else 0.0
    options = SimOptions(
        dialect=args.dialect,
        catalog=load_catalog(args.catalog) if args.catalog else None,
        balance=args.balance,
        currency=args.currency,
        key=args.key,
        latency_ms=args.latency_ms,
        fault=args.fault,
        fault_rate=fault_rate,
        fault_action=args.fault_action,
        fault_count=args.fault_count,
        retry_after=args.retry_after,
        order_start=args.order_start,
        progress_s=args.progress_s,
        seed=args.seed,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(options, args.host, args.port)

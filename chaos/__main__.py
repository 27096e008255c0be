"""`python -m chaos`: run the chaos suite, print the counts, write the JSON.

    python -m chaos                      # full run (~3.5 min): 8 fault cycles, 32 panels
    python -m chaos --runs 3             # three full runs
    python -m chaos --short              # ~10 s: one quick cycle, 12 panels (the test)
    python -m chaos --serve-workers 1    # replicas with one worker each (default: auto)
    python -m chaos --redis-url redis://host:6379/5   # external Redis (flushed first!)
    python -m chaos --cluster            # a local 3-master Redis Cluster, failover mid-load
    python -m chaos --replicated         # master + replica behind one address: lossy failovers
    python -m chaos --sentinel           # master + replica + Redis Sentinel: promotions

The exit status is 1 when any count of any run is not 0 (2 when a run could not
be carried out). Work dirs (logs, configs, Redis data) are kept when a count is
not 0, or with --keep.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from chaos import config, report
from chaos.reconcile import total
from chaos.run import Where, run_once

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def serve_workers(text: str) -> str:
    """`--serve-workers`: passed to each replica's `serve --workers` as it is."""
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: a count >= 1 or auto")
    return text


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    p.add_argument("--short", action="store_true", help="the quick run the test suite uses")
    p.add_argument("--runs", type=int, default=1, help="repeat the run N times (%(default)s)")
    p.add_argument("--cycles", type=int, help="fault cycles per run (full: 8, short: 1)")
    p.add_argument("--workers", type=int, help="concurrent panels (full: 32, short: 12)")
    p.add_argument("--replicas", type=int, help="gateway replicas (2)")
    p.add_argument("--serve-workers", type=serve_workers, metavar="N|auto",
                   help="each replica's `serve --workers` (serve's default: auto)")
    p.add_argument("--step-s", type=float, help="seconds an upstream fault lasts")
    p.add_argument("--settle-s", type=float, help="quiet seconds after the final restart")
    p.add_argument("--retry-s", type=float,
                   help="how long keyed panels retry after the load (full 40, short 4)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--redis-url", help="an external Redis or redis+cluster:// URL "
                       "(its database is FLUSHED at the start of each run; not killed)")
    where.add_argument("--cluster", action="store_true",
                       help="a local Redis Cluster (gateway.state.local_cluster)")
    where.add_argument("--replicated", action="store_true",
                       help="a master and a replica behind one address; the Redis steps "
                       "are lossy failovers (chaos.topology)")
    where.add_argument("--sentinel", action="store_true",
                       help="a master and a replica watched by Redis Sentinel; the Redis "
                       "steps are Sentinel failovers (chaos.topology)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (%(default)s)")
    p.add_argument("--work-dir", type=Path, help="where runs keep logs and data (a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep work dirs of clean runs too")
    return p.parse_args(argv)


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway"],
                               capture_output=True, text=True, cwd=Path(__file__).parent,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = len(dirty.splitlines())
    return f"{head}{f' + {changed} changed files under gateway/' if changed else ''}" or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    base = config.SHORT if args.short else config.FULL
    plan = base.scaled(cycles=args.cycles, workers=args.workers, replicas=args.replicas,
                       serve_workers=args.serve_workers,
                       step_s=args.step_s, settle_s=args.settle_s, retry_s=args.retry_s)
    where = Where(redis_url=args.redis_url, cluster=args.cluster,
                  replicated=args.replicated, sentinel=args.sentinel)
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    doc: dict[str, object] = {
        "command": " ".join(["python -m chaos", *(argv if argv is not None else sys.argv[1:])]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": git_state(), "mode": "short" if args.short else "full",
        "plan": {k: str(v) for k, v in vars(plan).items()}, "runs": []}
    results = []
    status = 0
    for i in range(1, args.runs + 1):
        work = root / f"run-{i}"
        began = time.monotonic()
        try:
            result = run_once(plan, where, work, i)
        except Exception as exc:
            traceback.print_exc()
            result = {"run": i, "error": f"{type(exc).__name__}: {exc}", "work_dir": str(work),
                      "seconds": round(time.monotonic() - began, 1)}
            status = 2
        else:
            print(report.table(result), flush=True)
            if any(result["counts"].values()):
                status = max(status, 1)
            elif not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        results.append(result)
        doc["runs"] = results
        doc["totals"] = total(r["counts"] for r in results if "counts" in r)
        report.write(args.out, doc)
    print(f"totals over {args.runs} run(s): {doc['totals']}  ->  {args.out}")
    if status == 0 and not args.work_dir and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

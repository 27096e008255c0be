"""The chaos suite's replicas run `serve` with its default worker count (auto) unless
`--serve-workers` says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import __main__ as chaos_cli
from chaos import config
from chaos.procs import Replica


def replica_workers(plan: config.Plan, tmp_path: Path) -> str:
    replica = Replica(0, tmp_path / "gateway.yaml", "redis://127.0.0.1:1/0", tmp_path,
                      plan.serve_workers)
    return replica.argv[replica.argv.index("--workers") + 1]


@pytest.mark.parametrize("argv,workers", [([], "auto"), (["--serve-workers", "1"], "1"),
                                          (["--short", "--serve-workers", "3"], "3")])
def test_replicas_take_the_worker_count(argv: list[str], workers: str, tmp_path: Path) -> None:
    args = chaos_cli.parse(argv)
    base = config.SHORT if args.short else config.FULL
    plan = base.scaled(serve_workers=args.serve_workers)
    assert plan.serve_workers == workers
    assert replica_workers(plan, tmp_path) == workers


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_a_worker_count_is_checked(bad: str) -> None:
    with pytest.raises(SystemExit):
        chaos_cli.parse(["--serve-workers", bad])

"""The table printed after each run, and the JSON written at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chaos.reconcile import COUNTS

TITLES = {
    "answers_without_records": "answers without records",
    "ids_answered_twice": "ids answered twice",
    "double_dispatches": "double dispatches",
    "unmapped_upstream_orders": "upstream orders neither mapped nor listed unknown",
    "placed_while_told_to_retry": "placed upstream while told to retry",
    "charges_without_records": "charges without records",
    "ledger_drift": "ledger drift",
    "refused_after_idle_restart": "refused right after an idle Redis restart",
}


def table(result: dict[str, Any]) -> str:
    obs = result["observations"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(obs["last_answer_kinds"].items()))
    lines = [
        f"chaos run {result['run']}: {result['seconds']} s (load {result['load_s']} s), "
        f"{result['redis']}",
        f"  {obs['logical_orders']} logical orders ({obs['keyed_orders']} keyed), "
        f"{obs['ids_given']} ids given; last answers: {kinds}",
        f"  upstream orders {dict(obs['upstream_orders'])}, records {obs['records_by_state']},"
        f" listed unknown {obs['unknown_listed']}",
        f"  {'count':<52} {'value':>6}",
    ]
    for name in COUNTS:
        value = result["counts"][name]
        lines.append(f"  {TITLES[name]:<52} {value:>6}{'  <-' if value else ''}")
    lines.append(f"  (not counted) keyed orders never answered: "
                 f"{obs['keyed_orders_never_answered']}; given ids a status call during the "
                 f"load called unknown: {obs['given_ids_status_called_unknown']}; placed "
                 f"while the panel heard nothing (connection lost): "
                 f"{obs['placed_but_the_panel_heard_nothing']}; charges awaiting the "
                 f"gateway's reconciler: {obs['charges_awaiting_reconciler']}")
    for name in COUNTS:
        for example in result["examples"].get(name, [])[:2]:
            lines.append(f"  e.g. {name}: {json.dumps(example, default=str)[:600]}")
    return "\n".join(lines)


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)

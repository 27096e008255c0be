"""The chaos suite's short run: every count is 0, so the suite cannot rot.

`python -m chaos --short` starts its own Redis, two simulators and two gateway
replicas, loads them while it kills a replica, SIGTERMs and SIGKILLs
redis-server and makes the providers misbehave, then counts every broken
promise (answers without records, ids answered twice, double dispatches,
unmapped upstream orders, orders placed while the panel was told to retry,
charges without records, ledger drift). `make chaos` is the full run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_chaos_short_run_breaks_no_promise(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run([sys.executable, "-m", "chaos", "--short", "--out", str(out),
                          "--work-dir", str(tmp_path / "work")],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(out.read_text())
    [result] = doc["runs"]
    assert "error" not in result, result.get("error")
    assert result["observations"]["logical_orders"] > 50
    assert result["observations"]["ids_given"] > 0
    assert len(result["faults"]) >= 8
    broken = {name: result["examples"].get(name, [])[:2]
              for name, value in result["counts"].items() if value}
    assert not broken, f"{result['counts']}\n{json.dumps(broken, indent=1)[:6000]}"
    assert run.returncode == 0, run.stdout[-3000:]

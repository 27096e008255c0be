"""`make mutants`: mutation testing of the modules that move money and orders.

For each module in `mutants/config.toml`, every mutation point (an operator, a
comparison, a constant, a rounding mode, a min/max, a boolean) is changed one at a
time in a copy of `gateway/` (the working tree is never touched), and the module's
unit tests run against that copy, stopping at the first failure. A mutant the tests
do not fail survived. The report (`mutants/report.md`) lists, per module, how many
were killed and every survivor, marked when `config.toml` explains it as
equivalent (a change no caller can observe).

    .venv/bin/python mutants/mutate.py [--jobs N] [--only gateway/money.py ...]

Each job has its own Redis (`REDIS_URL` for the test run), started once.
Exit status 1 if a survivor is not explained.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "mutants"
SOURCE = ROOT  # replaced by a snapshot of the commit under test in main()

SWAP_BINOP: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.Mult,
}
SWAP_CMP: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
SWAP_NAME = {
    "ROUND_HALF_UP": "ROUND_FLOOR", "ROUND_CEILING": "ROUND_FLOOR",
    "ROUND_FLOOR": "ROUND_CEILING", "min": "max", "max": "min",
}

LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # the n-th mutation point of the module, in walk order
    line: int
    what: str

    @property
    def key(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _points(tree: ast.AST) -> Iterator[tuple[ast.AST, str, object]]:  # noqa: C901
    """(node, description, change) for every mutation point; `change` applied by `_apply`."""
    skip = _docstrings(tree)
    in_fstring = {id(n) for f in ast.walk(tree) if isinstance(f, ast.JoinedStr)
                  for n in ast.walk(f)}
    annotations = {id(n) for a in ast.walk(tree)
                   for ann in ([a.annotation] if isinstance(a, ast.arg | ast.AnnAssign) and
                               a.annotation else
                               [a.returns] if isinstance(a, ast.FunctionDef |
                                                         ast.AsyncFunctionDef) and a.returns
                               else [])
                   for n in ast.walk(ann)}
    # what a log line says is no behaviour: its message and `extra` are not mutated
    logged = {id(n) for c in ast.walk(tree) if isinstance(c, ast.Call) and
              isinstance(c.func, ast.Attribute) and c.func.attr in LOG_METHODS
              for arg in [*c.args, *(k.value for k in c.keywords)] for n in ast.walk(arg)}
    for node in ast.walk(tree):
        if id(node) in annotations or id(node) in logged:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in SWAP_BINOP:
            new = SWAP_BINOP[type(node.op)]
            yield node, f"{type(node.op).__name__} -> {new.__name__}", ("op", new)
        elif isinstance(node, ast.AugAssign) and type(node.op) in SWAP_BINOP:
            new = SWAP_BINOP[type(node.op)]
            yield node, f"{type(node.op).__name__}= -> {new.__name__}=", ("op", new)
        elif isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAP_CMP:
                    new = SWAP_CMP[type(op)]
                    yield node, f"{type(op).__name__} -> {new.__name__}", ("cmp", i, new)
        elif isinstance(node, ast.BoolOp):
            new_b = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, f"{type(node.op).__name__} -> {new_b.__name__}", ("op", new_b)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not x -> x", ("unnot",)
        elif isinstance(node, ast.If | ast.While):
            yield node, "condition -> not condition", ("negate",)
        elif isinstance(node, ast.Constant) and id(node) not in skip | in_fstring:
            v = node.value
            if isinstance(v, bool):
                yield node, f"{v} -> {not v}", ("const", not v)
            elif isinstance(v, int):
                yield node, f"{v} -> {v + 1}", ("const", v + 1)
            elif isinstance(v, float):
                yield node, f"{v} -> {v * 2 + 1}", ("const", v * 2 + 1)
            elif isinstance(v, str) and v and len(v) <= 40:
                yield node, f"{v!r} -> 'XX{v}XX'", ("const", f"XX{v}XX")
        elif isinstance(node, ast.Name) and node.id in SWAP_NAME:
            yield node, f"{node.id} -> {SWAP_NAME[node.id]}", ("name", SWAP_NAME[node.id])
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            yield node, "return x -> return None", ("return_none",)


def _apply(node: ast.AST, change: tuple) -> None:
    kind = change[0]
    if kind == "op":
        node.op = change[1]()  # type: ignore[attr-defined]
    elif kind == "cmp":
        node.ops[change[1]] = change[2]()  # type: ignore[attr-defined]
    elif kind == "unnot":
        operand = node.operand  # type: ignore[attr-defined]
        node.__class__ = ast.Call  # `bool(x)`: keeps the node in place
        node.func, node.args, node.keywords = ast.Name("bool", ast.Load()), [operand], []  # type: ignore[attr-defined]
    elif kind == "negate":
        node.test = ast.UnaryOp(ast.Not(), node.test)  # type: ignore[attr-defined]
    elif kind == "const":
        node.value = change[1]  # type: ignore[attr-defined]
    elif kind == "name":
        node.id = change[1]  # type: ignore[attr-defined]
    elif kind == "return_none":
        node.value = ast.Constant(None)  # type: ignore[attr-defined]


def mutants_of(module: str) -> list[Mutant]:
    tree = ast.parse((SOURCE / module).read_text())
    return [Mutant(module, i, getattr(n, "lineno", 0), what)
            for i, (n, what, _) in enumerate(_points(tree))]


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse((SOURCE / mutant.module).read_text())
    for i, (node, _, change) in enumerate(_points(tree)):
        if i == mutant.index:
            _apply(node, change)
            break
    return ast.unparse(ast.fix_missing_locations(tree))


@dataclass
class Slot:
    """One job: a copy of gateway/ and a Redis of its own."""

    work: Path
    redis_url: str


def _run_tests(slot: Slot, tests: list[str], timeout: float) -> str:
    env = dict(os.environ, REDIS_URL=slot.redis_url, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
             "-p", "no:randomly", *tests],
            cwd=slot.work, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if run.returncode == 0 else "killed"


def _progress(mutant: Mutant, outcome: str) -> str:
    print(f"  {outcome:8} {mutant.key}", flush=True)
    return outcome


def _check_shadowing(work: Path) -> None:
    where = subprocess.run([sys.executable, "-c", "import gateway; print(gateway.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout
    if not Path(where.strip()).is_relative_to(work):
        raise SystemExit(f"the tests would import gateway from {where.strip()}, not {work}")


def run_mutant(slots: Queue[Slot], mutant: Mutant, tests: list[str], timeout: float) -> str:
    slot = slots.get()
    target = slot.work / mutant.module
    try:
        try:
            target.write_text(mutated_source(mutant))
        except (SyntaxError, ValueError):
            return "invalid"
        return _run_tests(slot, tests, timeout)
    finally:
        shutil.copy(SOURCE / mutant.module, target)
        slots.put(slot)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # Redis servers stopped on kill
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--from-log", nargs="*", default=[], metavar="LOG",
                        help="write the report from earlier runs' output, mutating nothing")
    parser.add_argument("--rev", default="HEAD", help="the commit whose gateway/ is mutated")
    parser.add_argument("--report", default=str(HERE / "report.md"))
    args = parser.parse_args()
    config = tomllib.loads((HERE / "config.toml").read_text())
    modules = {m: c for m, c in config["modules"].items() if not args.only or m in args.only}
    equivalent: dict[str, str] = config.get("equivalent", {})
    if args.from_log:
        return write_report(Path(args.report), from_logs(args.from_log, modules), equivalent,
                            modules)

    global SOURCE
    tmp = Path(tempfile.mkdtemp(prefix="smm-mutants."))
    servers, slots = [], Queue[Slot]()
    try:
        # the committed gateway/ (HEAD, or --rev): edits in progress in the working
        # tree neither break the run nor get mutated half-written
        SOURCE = tmp / "source"
        SOURCE.mkdir()
        archive = subprocess.run(["git", "archive", args.rev, "gateway"], cwd=ROOT,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(SOURCE)], input=archive, check=True)
        sys.path.insert(0, str(SOURCE))
        from gateway.state.embedded import EmbeddedRedis

        for j in range(args.jobs):
            server = EmbeddedRedis(tmp / f"redis{j}", databases=16)
            url = server.start()
            servers.append(server)
            work = tmp / f"work{j}"
            shutil.copytree(SOURCE / "gateway", work / "gateway",
                            ignore=shutil.ignore_patterns("__pycache__"))
            # pytest runs in the copy: its directory comes first on sys.path, ahead
            # of the editable install of the working tree; the tests are the tree's
            shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
            (work / "tests").symlink_to(ROOT / "tests")
            _check_shadowing(work)
            slots.put(Slot(work, url))
        results: dict[str, list[tuple[Mutant, str]]] = {}
        for module, cfg in modules.items():
            tests = cfg["tests"]
            slot = slots.get()
            started = time.monotonic()
            baseline = _run_tests(slot, tests, timeout=600)
            slots.put(slot)
            if baseline != "survived":
                print(f"{module}: the tests fail without a mutant ({baseline})", flush=True)
                return 2
            timeout = 3 * (time.monotonic() - started) + 10
            found = mutants_of(module)
            print(f"{module}: {len(found)} mutants, {len(tests)} test files", flush=True)
            with ThreadPoolExecutor(args.jobs) as pool:
                outcomes = list(pool.map(
                    lambda m, t=tests, s=timeout: _progress(m, run_mutant(slots, m, t, s)),
                    found))
            results[module] = list(zip(found, outcomes, strict=True))
            write_report(Path(args.report), results, equivalent, modules)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return write_report(Path(args.report), results, equivalent, modules)


def from_logs(logs: list[str], modules: dict[str, dict[str, list[str]]],
              ) -> dict[str, list[tuple[Mutant, str]]]:
    """Outcomes as a run prints them ("  killed   module:line: change"), per module;
    a later log's module replaces an earlier one's."""
    results: dict[str, list[tuple[Mutant, str]]] = {}
    for log in logs:
        seen: dict[str, list[tuple[Mutant, str]]] = {}
        for line in Path(log).read_text().splitlines():
            if not line.startswith("  "):
                continue
            outcome, key = line.split(maxsplit=1)
            module, rest = key.split(":", 1)
            number, what = rest.split(": ", 1)
            rows = seen.setdefault(module, [])
            rows.append((Mutant(module, len(rows), int(number), what), outcome))
        results.update(seen)
    return {m: results[m] for m in modules if m in results}


def write_report(path: Path, results: dict[str, list[tuple[Mutant, str]]],
                 equivalent: dict[str, str], modules: dict[str, dict[str, list[str]]]) -> int:
    lines = ["# Mutation report", "",
             "Written by `make mutants` (`mutants/mutate.py`); equivalents explained in",
             "`mutants/config.toml`.", "",
             "| module | mutants | killed | equivalent | unexplained | score |",
             "|---|---|---|---|---|---|"]
    detail: list[str] = []
    unexplained_total = 0
    for module, rows in results.items():
        valid = [(m, o) for m, o in rows if o != "invalid"]
        killed = sum(o in ("killed", "timeout") for _, o in valid)
        surv = [m for m, o in valid if o == "survived"]
        eq = [m for m in surv if _explained(m, equivalent)]
        unexplained = [m for m in surv if m not in eq]
        unexplained_total += len(unexplained)
        score = 100 * (killed + len(eq)) / len(valid) if valid else 100.0
        lines.append(f"| {module} | {len(valid)} | {killed} | {len(eq)} | {len(unexplained)} "
                     f"| {score:.0f} % |")
        detail += [f"## {module}", "", "Tests: " + ", ".join(modules[module]["tests"]), ""]
        for m in surv:
            why = _explained(m, equivalent)
            detail.append(f"- line {m.line}, `{m.what}`: " +
                          (f"equivalent: {why}" if why else "**survived, not explained**"))
        if not surv:
            detail.append("- no survivor")
        detail.append("")
    path.write_text("\n".join([*lines, "", *detail]))
    print(f"report: {path} ({unexplained_total} unexplained survivors)")
    return 1 if unexplained_total else 0


def _explained(m: Mutant, equivalent: dict[str, str]) -> str:
    """Equivalents are keyed by `module:line: what` (the report's own words)."""
    return equivalent.get(m.key, "")


if __name__ == "__main__":
    sys.exit(main())

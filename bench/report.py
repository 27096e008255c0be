"""Writing the results: latest.json (everything), latest.md (tables), latest.png (chart).

Each file is written to a temporary name and renamed into place, so a reader
(or a run interrupted half way) never sees half a file. The Markdown has one
table per upstream latency with the three targets side by side, then the
1,000-client runs, the ASGI servers side by side (uvicorn and granian), the extra
references, the targets with their verdicts, and the memory and profile figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.measure import (
    BARE,
    BARE_GRANIAN,
    DIRECT,
    GATEWAY,
    GATEWAY_2W,
    GATEWAY_GRANIAN,
    NGINX,
    TARGET_TITLES,
)
from bench.scenarios import SCENARIOS, TITLES

MAIN_TARGETS = (DIRECT, NGINX, GATEWAY)
CHART_TARGETS = (DIRECT, NGINX, GATEWAY, GATEWAY_GRANIAN, GATEWAY_2W, BARE, BARE_GRANIAN)
COLORS = {DIRECT: "#4c72b0", NGINX: "#55a868", GATEWAY: "#c44e52", GATEWAY_2W: "#8172b2",
          BARE: "#ccb974", GATEWAY_GRANIAN: "#dd8452", BARE_GRANIAN: "#937860"}
LABELS = dict(TARGET_TITLES)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, indent=1, default=str).encode() + b"\n")


# --- Markdown -----------------------------------------------------------------


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def _ms(v: Any) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _ratio(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in r) + " |"
            for r in rows]
    return out


def _target_cells(cell: Mapping[str, Any], target: str) -> list[str]:
    if target in cell["unavailable"]:
        return ["n/a", "", ""]
    m = cell["median"].get(target)
    if not m:
        return ["", "", ""]
    return [_num(m["rps"]), _ms(m["p50_ms"]), _ms(m["p99_ms"])]


def _cell_row(cell: Mapping[str, Any], label: str) -> list[str]:
    gw = cell["median"].get(GATEWAY) or {}
    gen = max((m.get("gen_cpu_pct") or 0.0) for m in cell["median"].values()) \
        if cell["median"] else None
    foreign = [m.get("foreign_cpu_pct") for m in cell["median"].values()
               if m.get("foreign_cpu_pct") is not None]
    errors = sum(int(m.get("errors") or 0) + int(m.get("non2xx") or 0)
                 for m in cell["median"].values())
    return [label, str(cell["concurrency"]),
            *_target_cells(cell, DIRECT), *_target_cells(cell, NGINX),
            *_target_cells(cell, GATEWAY),
            _ratio(cell["ratios"]["gateway_over_direct"]),
            _ratio(cell["ratios"]["gateway_over_nginx"]),
            _num(gw.get("server_cpu_us_per_req")),
            _ratio(gw.get("redis_cmds_per_req")), _ratio(gw.get("upstream_per_req")),
            _num(gen), _num(max(foreign) if foreign else None), str(errors)]


def _met(t: Mapping[str, Any]) -> str:
    if t.get("informational"):
        return {True: "yes", False: "no", None: "—"}[t["met"]]
    return {True: "yes", False: "**no**", None: "n/a"}[t["met"]]


SERVER_HEADER = ["scenario", "conc", "uvicorn req/s", "p50 ms", "p99 ms", "CPU µs/req",
                 "granian req/s", "p50 ms", "p99 ms", "CPU µs/req", "granian/uvicorn",
                 "gw/bare uvicorn", "gw/bare granian", "errors (granian)"]


def _server_side(cell: Mapping[str, Any], target: str) -> list[str]:
    if target in cell["unavailable"]:
        return ["n/a", "", "", ""]
    m = cell["median"].get(target) or {}
    return [_num(m.get("rps")), _ms(m.get("p50_ms")), _ms(m.get("p99_ms")),
            _num(m.get("server_cpu_us_per_req"))]


def _servers(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """The gateway under uvicorn and under granian, side by side (and gateway/bare per
    server where the bare app ran), with why granian was not measured if it was not."""
    rows, why = [], {}
    for cell in cells:
        if GATEWAY_GRANIAN not in cell["targets"]:
            continue
        ratios = cell["ratios"]
        gr = cell["median"].get(GATEWAY_GRANIAN) or {}
        errors = int(gr.get("errors") or 0) + int(gr.get("non2xx") or 0) if gr else None
        rows.append([TITLES[cell["scenario"]] + f" @{cell['latency_ms']} ms",
                     str(cell["concurrency"]), *_server_side(cell, GATEWAY),
                     *_server_side(cell, GATEWAY_GRANIAN),
                     _ratio(ratios.get("gateway_granian_over_gateway")),
                     _ratio(ratios.get("gateway_over_bare")),
                     _ratio(ratios.get("gateway_granian_over_bare_granian")),
                     "—" if errors is None else str(errors)])
        for target in (GATEWAY_GRANIAN, BARE_GRANIAN):
            if target in cell["unavailable"]:
                why.setdefault(cell["unavailable"][target], []).append(
                    f"{target} in {cell['key']}")
    if not rows:
        return []
    out = ["", "## ASGI server: uvicorn vs granian", "",
           "The same gateway (one worker, same config) under `serve --server uvicorn` "
           "(httptools, uvloop) and `--server granian`, measured back to back in each "
           "round; granian/uvicorn is the median of per-round req/s ratios. gw/bare: the "
           "gateway over the bare litestar app under the same server.", "",
           *_table(SERVER_HEADER, rows)]
    for reason, where in why.items():
        out += ["", f"Not measured ({', '.join(where)}): {' '.join(reason.split())}"]
    return out


HEADER = ["scenario", "conc", "direct req/s", "p50 ms", "p99 ms", "nginx req/s", "p50 ms",
          "p99 ms", "gateway req/s", "p50 ms", "p99 ms", "gw/direct", "gw/nginx",
          "gw CPU µs/req", "Redis cmds/req", "upstream/req", "gen CPU %", "other CPU %",
          "errors"]


def _latency_tables(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    for latency, title in ((0, "Upstream latency 0 ms (CPU-bound)"),
                           (100, "Upstream latency 100 ms (a realistic provider)")):
        rows = []
        for name in SCENARIOS:
            for cell in cells:
                if cell["scenario"] == name and cell["latency_ms"] == latency \
                        and cell["concurrency"] < 1000:
                    if cell["unavailable"].get(GATEWAY, "").startswith("not available"):
                        rows.append([TITLES[name], str(cell["concurrency"]),
                                     cell["unavailable"][GATEWAY], *[""] * (len(HEADER) - 3)])
                    else:
                        rows.append(_cell_row(cell, TITLES[name]))
        if rows:
            lines += ["", f"## {title}", "", *_table(HEADER, rows)]
    big = [c for c in cells if c["concurrency"] >= 1000]
    if big:
        rows = [_cell_row(c, f"status, paced ~{c['pace_ms']} ms/client" if c["pace_ms"]
                          else "status, closed loop") for c in big]
        lines += ["", "## 1,000 concurrent clients, upstream latency 100 ms", "",
                  *_table(HEADER, rows)]
    return lines


def _extra(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    extra = []
    for cell in cells:
        for target, ratio_key in ((BARE, "gateway_over_bare"),
                                  (BARE_GRANIAN, "gateway_granian_over_bare_granian"),
                                  (GATEWAY_2W, "gateway_2w_over_gateway")):
            m = cell["median"].get(target)
            if m:
                extra.append([TITLES[cell["scenario"]], str(cell["concurrency"]),
                              f"{cell['latency_ms']} ms", target, _num(m["rps"]),
                              _ms(m["p50_ms"]), _ms(m["p99_ms"]),
                              _num(m.get("server_cpu_us_per_req")),
                              _ratio(cell["ratios"].get(ratio_key)),
                              _num(m.get("gen_cpu_pct"))])
    if not extra:
        return []
    return ["", "## Extra references", "",
            "`bare`: a litestar handler answering constant bytes (the gateway's "
            "`services` answer) under uvicorn with the gateway's options; ratio is "
            "gateway/bare. `bare_granian`: the same app under granian (ASGI, uvloop, "
            "HTTP/1, one worker); ratio is gateway on granian / bare on granian. "
            "`gateway_2w`: `--workers 2`; ratio is 2 workers / 1 worker.",
            "", *_table(["scenario", "conc", "upstream", "target", "req/s", "p50 ms",
                         "p99 ms", "CPU µs/req", "ratio", "gen CPU %"], extra)]


def _problems(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    problems = []
    for cell in cells:
        for target, runs in cell["rounds"].items():
            merged: dict[str, int] = {}
            for r in runs:
                for kind, n in (r.get("server_log_problems") or {}).items():
                    merged[kind] = merged.get(kind, 0) + n
            problems += [[cell["key"], target, f"`{kind}`", f"{n:,}"]
                         for kind, n in sorted(merged.items(), key=lambda kv: -kv[1])[:3]]
    if not problems:
        return []
    return ["", "## What the servers logged (warnings and errors, all rounds)", "",
            *_table(["cell", "target", "kind", "count"], problems)]


def _targets(doc: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    unavailable = [[c["key"], t, why] for c in doc["cells"]
                   for t, why in c["unavailable"].items()]
    if unavailable:
        lines += ["", "## Targets not measured", "",
                  *_table(["cell", "target", "why"], unavailable)]
    summary = doc.get("summary") or {}
    return lines + [
        "", "## Targets", "",
        f"{summary.get('met', 0)} met, {summary.get('not_met', 0)} not met, "
        f"{summary.get('not_judged', 0)} not judged; rows marked *(info)* are "
        "informational, not issue 13's targets.", "",
        *_table(["target", "figure", "met?"],
                [[t["target"] + (" *(info)*" if t.get("informational") else ""),
                  t["figure"] + (f" — {t['note']}" if t["note"] else ""), _met(t)]
                 for t in doc["targets"]])]


def _memory(mem: Mapping[str, Any] | None) -> list[str]:
    if not mem:
        return []
    return ["", "## Redis memory", "",
            f"{mem['orders']:,} orders through `Store.put_orders` (batches of 1,000): "
            f"**{mem['bytes_per_order']:.1f} B/order** of `used_memory` "
            f"({mem['dataset_bytes_per_order']:.1f} B dataset); a record is "
            f"{mem['record_bytes_mean']:.0f} B of msgpack; buckets of "
            f"{mem['bucket_fields']} fields are `{mem['bucket_encoding']}` "
            f"({mem['bucket_memory_usage']:,} B each by MEMORY USAGE); written at "
            f"{_num(mem['orders_per_s'])} orders/s."]


def _soak(soak: Mapping[str, Any] | None) -> list[str]:
    if not soak:
        return []
    return ["", "## Soak", "",
            f"Mixed load at {soak['rps']:,.0f} req/s (target {soak['target_rps']:,.0f}: "
            f"half the measured maximum; {soak['connections']} connections each pausing "
            f"~{soak['pause_ms']} ms) for {soak['seconds']:.0f} s: gateway RSS "
            f"{soak['rss_first_mib']:.1f} MiB after warm-up → {soak['rss_last_mib']:.1f} "
            f"MiB at the end (peak {soak['rss_peak_mib']:.1f}), "
            f"**{_num(soak['growth_pct'], 1)}%**; p99 {_ms(soak['p99_ms'])} ms, "
            f"{soak['errors']} errors."]


def _profiles(profiles: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, prof in profiles.items():
        lines += ["", f"## Profile: {name} (py-spy, {prof['samples']} busy samples at "
                  f"{prof['rps_while_profiled']:,.0f} req/s; flame graph `{prof['svg']}`)", ""]
        rows = []
        for i in range(max(len(prof["top_own"]), len(prof["top_gateway_inclusive"]))):
            own = prof["top_own"][i] if i < len(prof["top_own"]) else ["", ""]
            ours = (prof["top_gateway_inclusive"][i]
                    if i < len(prof["top_gateway_inclusive"]) else ["", ""])
            pkg = prof["by_package"][i] if i < len(prof["by_package"]) else ["", ""]
            rows.append([f"`{own[0]}`" if own[0] else "", str(own[1]),
                         f"`{ours[0]}`" if ours[0] else "", str(ours[1]),
                         pkg[0], str(pkg[1])])
        lines += _table(["own time", "%", "gateway code, inclusive", "%", "package (own)",
                         "%"], rows)
    return lines


def markdown(doc: Mapping[str, Any]) -> str:
    meta = doc["meta"]
    cells: list[Mapping[str, Any]] = doc["cells"]
    lines = [
        "# smm-gateway benchmark",
        "",
        f"{meta['started']} · mode **{meta['mode']}** · {meta['rounds']} round(s) × "
        f"{meta['duration_s']} s (+{meta['warmup_s']} s warm-up) per target · "
        f"generator **{meta['generator']}** ({meta['generator_version']}) · "
        f"{meta['machine'].get('cpus')} CPUs ({meta['machine'].get('cpu_model', '?')}) · "
        f"load avg before {meta['load_before'][0]:.2f}, after {meta['load_after'][0]:.2f} · "
        f"wall time {meta['wall_s']:.0f} s",
        "",
        "Figures are medians over rounds; ratios are medians of per-round ratios "
        "(throughput). One gateway worker unless said. *gen CPU* is the load generator's "
        "own CPU (% of one core; it runs 2 threads at c≥64), *other CPU* the machine's "
        "busy time not spent by this run's processes (contention from elsewhere, % of one "
        "core). *gw CPU µs/req*: CPU of the gateway process per answered request; "
        "*Redis cmds/req* and *upstream/req*: Redis commands (those a Lua script runs "
        "included; the per-command split is in latest.json) and simulator requests per "
        "gateway request.",
    ]
    lines += _latency_tables(cells)
    lines += _servers(cells)
    lines += _extra(cells)
    lines += _problems(cells)
    lines += _targets(doc)
    lines += _memory(doc.get("redis_memory"))
    lines += _soak(doc.get("soak"))
    lines += _profiles(doc.get("profiles") or {})
    return "\n".join(lines) + "\n"


# --- PNG ----------------------------------------------------------------------


def chart(doc: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in doc["cells"] if c["median"]]
    latencies = sorted({c["latency_ms"] for c in cells}) or [0]
    fig, axes = plt.subplots(len(latencies), 2, figsize=(18, 5.6 * len(latencies)),
                             squeeze=False)
    targets = [t for t in CHART_TARGETS if any(t in c["median"] for c in cells)]
    width = 0.8 / max(len(targets), 1)
    for row, latency in enumerate(latencies):
        group = [c for c in cells if c["latency_ms"] == latency]
        labels = [f"{c['scenario']} c{c['concurrency']}"
                  + (f" paced {c['pace_ms']} ms" if c["pace_ms"] else "") for c in group]
        tput, lat = axes[row][0], axes[row][1]
        for i, target in enumerate(targets):
            xs = [j + (i - (len(targets) - 1) / 2) * width for j in range(len(group))]
            med = [c["median"].get(target) or {} for c in group]
            label = LABELS.get(target, target)
            tput.bar(xs, [m.get("rps") or 0 for m in med], width, label=label,
                     color=COLORS.get(target, "#999999"))
            lat.bar(xs, [m.get("p50_ms") or 0 for m in med], width,
                    color=COLORS.get(target, "#999999"), label=f"{label} p50")
            lat.scatter(xs, [m.get("p99_ms") or float("nan") for m in med], marker="_",
                        s=120, color="black", zorder=3,
                        label="p99" if i == 0 else None)
        for ax, title, unit in ((tput, "throughput", "req/s"), (lat, "latency p50 (bar), "
                                                              "p99 (tick)", "ms")):
            ax.set_title(f"{title} — upstream {latency} ms")
            ax.set_ylabel(unit)
            ax.set_yscale("log")
            ax.set_xticks(range(len(group)))
            ax.set_xticklabels(labels, fontsize=7, rotation=40, ha="right")
            ax.grid(axis="y", alpha=0.3)
        tput.legend(fontsize=7)
    fig.suptitle(f"smm-gateway bench ({doc['meta']['mode']}, {doc['meta']['started']})")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def write_all(out: Path, doc: Mapping[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "latest.json", "md": out / "latest.md", "png": out / "latest.png"}
    write_json(paths["json"], doc)
    write_atomic(paths["md"], markdown(doc).encode())
    chart(doc, paths["png"])
    return paths

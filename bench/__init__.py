"""The smm-gateway benchmark suite (`python -m bench`, `make bench`).

A gateway is judged by what it adds over calling the provider direct, so every
figure here is measured in the same run against two references: the provider
simulator called direct (the limit) and nginx proxying to it (what the best plain
proxy adds). Absolute times on a shared machine drift; ratios measured side by
side, round after round, do not drift as much.

Modules: `osstat` (CPU/RSS from /proc), `procs` (the processes the suite starts
and stops), `load` (wrk, or the Python generator in `pygen`), `scenarios` (what
is sent, and fixtures), `plan` (which cells), `measure` (cells, rounds, probes),
`memory` (Redis bytes per order, soak), `profile` (py-spy), `targets`
(verdicts), `report` (JSON, Markdown, PNG), `bare_app` (the litestar ceiling),
`__main__` (the command). See bench/README.md.
"""

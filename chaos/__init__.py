"""The chaos suite (`python -m chaos`, `make chaos`): the gateway's promises under fire.

One run starts a Redis (a redis-server it can SIGTERM, SIGKILL and restart in
place; or `--redis-url`; or a local Redis Cluster with `--cluster`), two provider
simulators and two or more gateway replicas, drives many concurrent panels at
them (adds with and without an Idempotency-Key, status polls, refills, cancels,
a prepaid client's adds racing each other) while it kills replicas, stops Redis
and makes the providers misbehave; then it lets everything settle and counts,
from the providers' own books, Redis and the operator commands, every broken
promise. Every count must be 0.

Modules: `config` (the plan of a run and the gateway's config), `procs` (the
processes), `load` (the panels and what they were told), `faults` (the fault
schedule), `truth` (reading the providers, Redis and the operator commands),
`reconcile` (the counts), `run` (one run), `report` (table and JSON),
`__main__` (the command).
"""

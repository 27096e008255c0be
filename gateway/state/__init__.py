"""Everything the gateway keeps in Redis, one module per stored concern.

Only this package talks to Redis. Key names live in `keys`, Lua scripts in
`scripts`; `connect` opens the client and maps redis-py's errors to
`gateway.errors.StoreUnavailable` for every class here.
"""

"""`python -m gateway ...` is the `smm-gateway` command."""

from gateway.ops.cli import main

main()

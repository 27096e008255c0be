"""``python -m gateway.sim``: see :func:`gateway.sim.cli.main`."""

from gateway.sim.cli import main

if __name__ == "__main__":
    main()

"""The ``hwsim`` command (``main`` parses and runs one command; ``entry`` is the console script)."""
from simulator.cli.main import entry, main

__all__ = ["entry", "main"]

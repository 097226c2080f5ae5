"""``python -m simulator.cli``: the ``hwsim`` command."""
from simulator.cli.main import entry

entry()

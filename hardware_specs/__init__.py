"""Device specs: ``devices/*.toml`` (one file per device), the loader and the schema.

``simulator`` is imported first: ``spec`` needs ``simulator.op`` and ``simulator/__init__``
imports ``simulate``, which imports this package's loader; importing ``simulator`` first lets
``import hardware_specs.loader`` work on its own (without it, that import is circular).
"""
import simulator  # noqa: F401  (import order, see above)

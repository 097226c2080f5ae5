"""What is computed, as device-free records: ops, the operator graph, its array form.
``workloads`` and ``hardware_specs`` import only this package and ``simulator.errors``."""

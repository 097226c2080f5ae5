"""Start-up imports what a command needs when it needs it (issue 19, item 7; STYLE.md rule 10).

What is imported, not how long it takes: benchmarks/bench_startup.py times the whole process
and docs/speed.md records the figures. Each command runs in a fresh interpreter, which then
lists the top-level packages it loaded.
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"torch", "onnx", "onnxscript", "matplotlib", "dask", "distributed", "pyarrow",
            "nbclient", "ipykernel"}
LIST = """import sys
from simulator.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --help
    pass
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def loaded(*argv: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", LIST, *argv], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return set(run.stderr.split())


def test_predict_imports_no_extra_nor_pandas():
    """numpy and networkx are what it needs: a step this small (1,322 ops a stage) is priced by
    the NumPy twins of the kernels (simulator.engine.dispatch), so numba and the scipy its
    first call loads stay out."""
    modules = loaded("predict", "llama2-7b", "--device", "h100")
    assert {"numpy", "networkx"} <= modules
    assert modules & (OPTIONAL | {"pandas", "numba", "scipy"}) == set()


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"]], ids=" ".join)
def test_help_imports_no_engine(argv):
    modules = loaded(*argv)
    assert "simulator" in modules
    assert modules & (OPTIONAL | {"numpy", "numba", "networkx", "pandas", "scipy"}) == set()


def test_a_bad_input_is_refused_before_numba_loads():
    """numba (and the scipy its first call loads) come in when a step is priced."""
    modules = loaded("predict", "no-such-model", "--device", "a100")
    assert modules & (OPTIONAL | {"numba", "pandas", "scipy"}) == set()


def test_dir_lists_the_lazy_names_without_loading_them():
    """``dir(simulator)`` (tab completion) shows ``simulate``, ``compare``, ... though they load
    on first use only."""
    code = ("import sys, simulator; names = dir(simulator); "
            "assert {'simulate', 'compare', 'sweep', 'capacity_plan', 'Result'} <= set(names), names; "
            "assert 'simulator.api' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

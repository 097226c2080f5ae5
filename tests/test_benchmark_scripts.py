"""The scripts under benchmarks/ import this tree's packages when run by path.

``python benchmarks/x.py`` puts benchmarks/ first on sys.path, not the repository, so without
the repository root inserted ahead of its imports a script imports whatever ``simulator`` the
environment finds: with hwsim installed editable from another checkout, that checkout's code
(a clean copy's neusight_labels.py priced its labels with /work/main's simulator, ca7d537).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PROJECT_IMPORT = re.compile(r"^\s*(from|import) (simulator|hardware_specs|workloads|benchmarks)\b",
                            re.MULTILINE)
ROOT_FIRST = "sys.path.insert(0, str(ROOT))"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")
                                          if p.name != "__init__.py"))
def test_script_puts_its_tree_first_before_importing_it(script):
    text = (BENCHMARKS / script).read_text()
    first = PROJECT_IMPORT.search(text)
    if first is None:
        return   # imports nothing of the project (stdlib only, or subprocesses in ROOT)
    assert ROOT_FIRST in text[:first.start()], script
    assert "ROOT = Path(__file__).resolve().parents[1]" in text[:first.start()], script

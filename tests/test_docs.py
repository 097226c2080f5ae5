"""The docs cannot go stale: the generated tables are what ``docs/generate.py`` builds from the
catalogue and the zoo today, the README stays a short first read whose first code block holds
the two commands CI and reviewers run, and the links between README and docs resolve."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from tests.conftest import load_module

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
INSTALL_AND_PREDICT = "pip install -e . && hwsim predict"
INSTALL_AND_TEST = 'pip install -e ".[test]" && python -m pytest'


generate = load_module(DOCS / "generate.py", "docs_generate")


@functools.cache
def _sections(file: str) -> dict[str, list[str]]:
    """docs/<file>'s sections built once for both tests below (accuracy.md's take tens of
    seconds: they price every NeuSight label and kernel table)."""
    return generate.built(file)


@pytest.mark.parametrize("file", sorted(generate.SECTIONS))
def test_generated_sections_equal_what_the_script_generates(file):
    path = DOCS / file
    assert path.read_text(encoding="utf-8") == generate.generated(path, _sections(file)), (
        f"docs/{file} is stale: run 'python docs/generate.py' and commit the result")


@pytest.mark.parametrize("file", sorted(generate.SECTIONS))
def test_generating_twice_changes_nothing(file):
    """Rendering is idempotent: the generated text, its sections rendered into it again, is
    the same text (the sections are the same data's, built once)."""
    once = generate.generated(DOCS / file, _sections(file))
    assert generate.regenerate(once, file, _sections(file)) == once


def test_render_replaces_only_between_the_markers():
    text = "before\n<!-- BEGIN generated: x -->\nold\n<!-- END generated: x -->\nafter\n"
    assert generate.render(text, "x", ["new", "rows"]) == (
        "before\n<!-- BEGIN generated: x -->\nnew\nrows\n<!-- END generated: x -->\nafter\n")
    with pytest.raises(ValueError, match="exactly one"):
        generate.render("no markers here\n", "x", ["new"])


def test_readme_is_at_most_300_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move detail into docs/"


def test_readme_first_code_block_holds_the_two_commands_on_the_first_screen():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert first is not None, "README.md has no code block"
    assert text[:first.start()].count("\n") < 20, "the set-up commands must open the README"
    assert INSTALL_AND_PREDICT in first.group(1)
    assert INSTALL_AND_TEST in first.group(1)


def test_ci_runs_the_readme_test_command():
    assert INSTALL_AND_TEST in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"),
                  flags=re.DOTALL | re.MULTILINE)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", ["README.md"] + sorted(f"docs/{p.name}"
                                                        for p in DOCS.glob("*.md")))
def test_links_between_readme_and_docs_resolve(page):
    path = ROOT / page
    for target, anchor in re.findall(r"\]\(([^)#\s:]*)(?:#([^)\s]+))?\)",
                                     path.read_text(encoding="utf-8")):
        linked = (path.parent / target).resolve() if target else path
        assert linked.is_file(), f"{page}: link to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page}: no heading #{anchor} in {linked.name}"

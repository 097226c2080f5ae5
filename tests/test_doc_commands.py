"""Every ``hwsim`` command the README and docs show is one the CLI takes as written (issue 22,
"Done means": each item is in the README or docs): each command line of their code blocks
(continuations joined, comments dropped) parses with ``hwsim``'s own parser, so a flag renamed
or one a command does not have fails here. The tour's plan command also runs (small: one
device count), and shows the owning cost its flags ask for."""
import shlex
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.cli.main import build_parser
from simulator.errors import HwsimError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands(page: Path) -> list[str]:
    """The ``hwsim ...`` lines of ``page``'s fenced code blocks."""
    out, fence, block = [], None, []
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, block = line.strip().removeprefix("```"), []
                continue
            if fence in ("", "bash", "sh", "console"):
                for cmd in "\n".join(block).replace("\\\n", " ").splitlines():
                    cmd = cmd.strip().removeprefix("$ ")
                    if cmd.startswith("hwsim "):
                        out.append(cmd.split(" #")[0].strip())
            fence = None
        elif fence is not None:
            block.append(line)
    return out


ALL = [(page.relative_to(ROOT).as_posix(), cmd) for page in PAGES for cmd in commands(page)]


def test_the_pages_show_commands():
    assert len([1 for page, _ in ALL if page == "README.md"]) >= 10


@pytest.mark.parametrize("page, command", ALL, ids=[f"{p}:{i}" for i, (p, _) in enumerate(ALL)])
def test_each_command_parses(page, command, capsys):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except (HwsimError, SystemExit) as err:   # the parser's one-line error; --help's exit
        pytest.fail(f"{page}: '{command}' does not parse: {err}")


def test_a_wrong_flag_does_not_parse():
    with pytest.raises(HwsimError, match="unrecognized arguments: --bogus"):
        build_parser().parse_args(["plan", "llama2-7b", "--tokens", "1e9", "--bogus", "2"])


def test_the_tours_plan_flags_show(capsys):
    """The tour's plan line gives --own-years and an electricity price: the table shows
    own_cost_usd beside cost_usd."""
    (tour,) = [c for p, c in ALL if p == "README.md" and c.startswith("hwsim plan ")]
    assert "--own-years" in tour
    argv = shlex.split(tour)[1:] + ["--devices", "a100", "--device-counts", "64", "--tp", "2",
                                    "--pp", "1", "--zero", "1", "--recompute", "full",
                                    "--micro-batch", "1", "--workers", "1", "--top", "1"]
    argv[argv.index("--deadline-days") + 1] = "400"
    assert main(argv) == 0
    header = capsys.readouterr().out.splitlines()[1].split()
    assert header.index("own_cost_usd") == header.index("cost_usd") + 1


def test_the_tours_sweep_rows_plot(tmp_path, capsys):
    """The README's sweep has no --tokens, so its rows have no run totals: the pareto plot's
    default axes say so and what to give, in one line; per-step axes plot."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from simulator.explore.sweep import sweep

    rows = tmp_path / "rows.parquet"
    sweep("gpt3-125m", ["a100", "h100"], [1], [{}], workers=1, progress=False, out=rows)
    assert main(["plot", "pareto", str(rows), "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give the sweep --tokens" in err
    assert main(["plot", "pareto", str(rows), "--x", "step_time_s", "--y", "cost_usd_per_step",
                 "--out", str(tmp_path / "b.png")]) == 0

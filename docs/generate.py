"""Rewrite the generated tables of the docs from the data they describe.

    python docs/generate.py            rewrite every generated section in place
    python docs/generate.py --check    exit 1, naming the stale sections, if any differs

A generated section of a Markdown file lies between ``<!-- BEGIN generated: NAME -->`` and
``<!-- END generated: NAME -->``; only the text between the two markers is rewritten, so the
prose around it is kept as written. Each table is built from the shipped data and the code
that reads it -- the device and cluster catalogue (``hardware_specs``) and the model zoo
(``workloads.zoo.MODELS``) -- never typed by hand, so a figure in the docs cannot drift from
the figure the simulator uses. Rewriting twice gives the same files (``tests/test_docs.py``
asserts the committed sections equal what this script generates).

Only ``hardware_specs``, ``workloads`` and the kernel fits of ``simulator.calibrate.streaming``
are imported.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:  # run as ``python docs/generate.py`` from a plain checkout
    sys.path.insert(0, str(ROOT))

BEGIN = "<!-- BEGIN generated: {name} -->"
END = "<!-- END generated: {name} -->"
NONE = "—"


# ----------------------------------------------------------------------------- formatting

def _num(value: float, digits: int = 6) -> str:
    """A figure as written in a spec file: up to ``digits`` significant digits, no trailing
    zeros, thousands separated (1,978.9, 6,000, 0.355), never in exponent form."""
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:,.{digits}g}"


def _prose(text: str) -> list[str]:
    """A paragraph wrapped as the hand-written text around it is (100 columns)."""
    return textwrap.wrap(text, width=100, break_on_hyphens=False, break_long_words=False)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _code(name: str) -> str:
    return f"`{name}`"


# ---------------------------------------------------------------------------------- devices

def _catalogue() -> dict:
    """Catalogue name -> DeviceSpec, every shipped file (the host is built at run time)."""
    from hardware_specs.host import HOST_NAME
    from hardware_specs.loader import list_devices, load_device

    return {name: load_device(name) for name in list_devices() if name != HOST_NAME}


def _efficiency_defaults() -> dict[str, object]:
    """The DeviceSpec fields named ``*_efficiency`` (and ``*_efficiency_compiled``) with a
    scalar default (1.0 or None)."""
    from hardware_specs.spec import DeviceSpec

    return {f.name: f.default for f in dataclasses.fields(DeviceSpec)
            if f.name.removesuffix("_compiled").endswith("_efficiency")
            and f.default is not dataclasses.MISSING}


def _efficiencies(device, defaults: dict[str, object]) -> str:
    """The efficiencies a spec file gives (a measured figure, cited there), else a dash."""
    given = [f"{name.replace('_efficiency', '')} {_num(getattr(device, name))}"
             + (" (prior)" if name in device.priors else "")
             for name, default in defaults.items() if getattr(device, name) != default]
    if device.function_efficiency:
        given.append(f"{len(device.function_efficiency)} functions (calibrated)")
    return ", ".join(given) or NONE


def devices_section() -> list[str]:
    """Two tables of the shipped device files: compute and power, then memory and links."""
    from hardware_specs.host import HOST_NAME
    from hardware_specs.loader import ALIASES

    devices = _catalogue()
    formats = sorted({dtype for d in devices.values() for dtype in d.peak_flops_per_s})
    defaults = _efficiency_defaults()
    compute = [[_code(name), d.device_class.value, d.vendor]
               + [_num(d.peak_flops_per_s[f] / 1e12) if f in d.peak_flops_per_s else NONE
                  for f in formats]
               + [_num(d.vector_flops_per_s / 1e12)]
               + [_num(value) + (" (prior)" if figure in d.power_priors else "")
                  for figure, value in (("tdp_w", d.tdp_w), ("idle_w", d.idle_power_w))]
               + [_num(d.price_per_hour_usd) if d.price_per_hour_usd is not None
                  else d.unpriced_label() or NONE,   # not offered / none cited / n/a
                  _efficiencies(d, defaults)]
               for name, d in devices.items()]
    memory = [[_code(name),
               "; ".join(f"{m.name} {_num(m.capacity_bytes / 1e9, 4)} GB at "
                         f"{_num(m.bandwidth_bytes_per_s / 1e9)} GB/s" for m in d.memory),
               "; ".join(f"{link.name} ({link.kind.value}) {_num(link.bandwidth_bytes_per_s / 1e9)}"
                         f" GB/s" + (f", {link.count} links" if link.count > 1 else "")
                         for link in d.links) or NONE]
              for name, d in devices.items()]
    aliases = ", ".join(f"`{alias}` (`{name}`)" for alias, name in sorted(ALIASES.items()))
    lines = _prose(f"{len(devices) + 1} devices: the {len(devices)} shipped files below and "
                   f"`{HOST_NAME}`, which is built at run time from the machine it runs on.")
    lines += [""] + _prose(
        "Compute and power. Dense peaks in TFLOP/s per format (a dash: the device has no matrix "
        "units for it and runs it in the nearest format it has); vector: the fp32 peak of the "
        "non-matrix units; power in W; price in USD per device-hour ('not offered': no one "
        "rents the device, as far as its spec's dated search found; 'none cited': rented, but "
        "no citable dated price); measured efficiencies: the "
        "achieved fractions of the datasheet rates that the spec file gives, each cited there (one not listed is 1.0, or "
        "falls back as the schema says: conv and attention to matmul, matmul_memory and "
        "norm_memory to memory, norm_memory_compiled, under compiled fusion, to norm_memory); "
        "a GPU with no streaming measurement carries the class priors, "
        "marked (prior): the medians of the GPUs measured (accuracy.md, Kernels). A TDP or idle "
        "draw marked (prior) is not published for the device: a class prior (idle) or a "
        "figure from measured devices of its class, as its spec's [power] comments say.") + [""]
    lines += _table(["device", "class", "vendor"] + [f.name.lower() for f in formats]
                    + ["vector", "TDP", "idle", "price", "measured efficiencies"], compute)
    lines += [""] + _prose("Memory (innermost level first; capacity in GB = 1e9 bytes, datasheet "
                           "bandwidth) and links (GB/s per direction, all links of a kind "
                           "together).") + [""]
    lines += _table(["device", "memory", "links"], memory)
    return lines + [""] + _prose(f"Aliases: {aliases}.")


def clusters_section() -> list[str]:
    """One row per shipped cluster file."""
    from hardware_specs.cluster import list_clusters, load_cluster

    def network(net) -> str:
        if net is None:
            return NONE
        return (f"{net.name} ({net.kind.value}) {_num(net.bandwidth_bytes_per_s / 1e9)} GB/s, "
                f"{_num(net.latency_s * 1e6)} us, efficiency {_num(net.efficiency)}")

    rows = []
    for name in list_clusters():
        c = load_cluster(name)
        shape = c.topology.value + (f" {'x'.join(map(str, c.torus_dims))}"
                                    if c.torus_dims else "")
        rows.append([_code(name), _code(c.device.name),
                     f"{c.nodes} x {c.devices_per_node}", shape, network(c.intra),
                     network(c.inter)])
    return _table(["cluster", "device", "nodes x devices", "topology", "intra-node network",
                   "inter-node network"], rows)


# -------------------------------------------------------------------------------------- zoo

def _transformer_row(w) -> list[str]:
    return [w.style.value, str(w.layers), _num(w.hidden), str(w.heads),
            str(w.n_kv_heads), f"{_num(w.ffn_dim)} {w.ffn.value}", w.norm.value,
            "learned" if w.learned_positions else "rotary", _num(w.vocab), _num(w.sequence)]


def _resnet_row(w) -> list[str]:
    return [w.block.value, "-".join(map(str, w.layers)), f"{w.image_size}x{w.image_size}",
            _num(w.num_classes)]


def _mlp_row(w) -> list[str]:
    return ["-".join(map(str, (w.input_dim, *w.hidden, w.num_classes))), w.activation.value]


def _zoo_kinds() -> list[tuple[type, list[str], Callable]]:
    from workloads.cnn import ResNetConfig
    from workloads.mlp import MLPConfig
    from workloads.transformer import TransformerConfig

    return [(TransformerConfig, ["style", "layers", "hidden", "heads", "KV heads", "FFN",
                                 "norm", "positions", "vocab / classes", "sequence"],
             _transformer_row),
            (ResNetConfig, ["block", "blocks per stage", "image", "classes"], _resnet_row),
            (MLPConfig, ["widths", "activation"], _mlp_row)]


def zoo_section() -> list[str]:
    """One table per kind of zoo model, in ``MODELS`` order, with the closed-form parameters."""
    from workloads.zoo import MODELS

    lines: list[str] = []
    kinds = _zoo_kinds()
    for kind, header, row in kinds:
        rows = [[_code(name), f"{w.num_params():,}"] + row(w)
                for name, w in MODELS.items() if isinstance(w, kind)]
        if rows:
            lines += _table(["model", "parameters"] + header, rows) + [""]
    others = [[_code(name), f"{w.num_params():,}"] for name, w in MODELS.items()
              if not isinstance(w, tuple(kind for kind, _, _ in kinds))]
    if others:
        lines += _table(["model", "parameters"], others) + [""]
    return lines[:-1]


# ---------------------------------------------------------------------------------- kernels

def kernels_section() -> list[str]:
    """The streaming fits of ``simulator.calibrate.streaming`` on the NeuSight kernel table:
    per GPU and kernel class, the efficiency and the held-out error."""
    from simulator.calibrate.streaming import CLASSES, fit_tables

    data = ROOT / "tests" / "data"
    devices, fits = fit_tables(data / "neusight_vector_kernels.csv", data / "neusight_devices.csv")
    amd, amd_fits = fit_tables(data / "neusight_vector_kernels_amd.csv",
                               data / "neusight_devices_amd.csv")
    devices, fits = devices + amd, {**fits, **amd_fits}
    rows = []
    for d in devices:
        for kind in CLASSES:
            f = fits[d["device"], kind]
            rows.append([d["device"], kind, f"{f.efficiency:.3f}", str(f.fitted_rows),
                         str(f.held_out_rows), f"{100 * f.held_out_median_error:.1f} %",
                         ", ".join(_code(n) for n in d["catalogue"].split()) or NONE])
    lines = _prose(
        "Memory-bound kernels at their measured streaming efficiency "
        "(`simulator/calibrate/streaming.py`): fp32 elementwise (add, mul, relu, gelu), layer "
        "norm and softmax kernels timed by NeuSight (Lee et al., ASPLOS 2025; PyTorch 2.1.0, "
        "CUDA 12.1; `tests/data/neusight_vector_kernels.csv`; the AMD MI100 and MI210: PyTorch "
        "2.4.1, ROCm, `tests/data/neusight_vector_kernels_amd.csv`, all their rows of those "
        "ops). Fitted on kernels of at least 4x "
        "the L2 (geometric mean of the achieved fraction of the datasheet bandwidth); the fifth "
        "of each table with the longest rows is held out and its median |error| reported. "
        "Catalogue: the spec files that carry the fit (same chip and memory where not the same "
        "part; the A100 SXM4 files keep their own cited elementwise 0.88, an Nsight Compute "
        "measurement these fits agree with within 0.03; one MI250 GCD, `mi250-die`, the "
        "MI210's GCD); every other GPU carries the NVIDIA GPUs' medians as a prior.") + [""]
    return lines + _table(["GPU", "class", "efficiency", "fitted", "held out",
                           "held-out median |error|", "catalogue"], rows)


def gemm_fits_section() -> list[str]:
    """The GEMM fits of ``simulator.calibrate.gemm`` on DeepBench's and NeuSight's tables: per
    GPU and format the efficiency, the GEMMs fitted and held out (the largest fifth), the
    held-out median and worst |error|, and the figure the spec carries."""
    from hardware_specs.loader import load_device
    from simulator.calibrate import gemm

    fits = [("DeepBench", device, precision, f)
            for (device, precision), f in gemm.fit_deepbench().items()]
    fits += [("NeuSight", device, "fp32", f) for device, f in gemm.fit_neusight().items()]
    rows = []
    for table, device, precision, f in fits:
        spec = load_device(f["spec"])
        carried = spec.matmul_efficiency if precision == "fp16" else spec.fp32_matmul_efficiency
        rows.append([table, device, _code(f["spec"]), precision, f"{f['efficiency']:.3f}",
                     str(f["n"]), str(f["held"]), f"{100 * f['held_out_median']:.1f} %",
                     f"{100 * f['held_out_max']:.1f} %",
                     NONE if carried is None else f"{carried:.3f}"])
    return _table(["table", "GPU", "spec", "format", "efficiency", "fitted", "held out",
                   "held-out median |error|", "held-out worst", "spec's figure"], rows)


def attention_core_section() -> list[str]:
    """FlashAttention's A100 timings of Megatron-LM's attention core against hwsim on the
    a100-sxm4-40gb, with and without ``matmul_memory_efficiency``."""
    import csv
    import dataclasses as dc

    from hardware_specs.loader import load_device
    from simulator.calibrate.attention_core import core_ms

    device = load_device("a100-sxm4-40gb")
    streaming = dc.replace(device, matmul_memory_efficiency=None)
    with (ROOT / "tests" / "data" / "fa1_attention_a100.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    cache: dict = {}

    def ms(spec, seq: int, dropout: bool, phase: str) -> float:
        key = (id(spec), seq, dropout)
        if key not in cache:
            cache[key] = core_ms(spec, seq, dropout)
        return cache[key][phase]

    rows = []
    for r in table:
        seq, dropout, measured = int(r["seq_len"]), r["dropout"] == "1", float(r["megatron_ms"])
        hw, flat = (ms(spec, seq, dropout, r["pass"]) for spec in (device, streaming))
        rows.append([f"{seq:,}", "yes" if dropout else "no", r["pass"], f"{measured:.2f} ms",
                     f"{hw:.2f}", f"{hw / measured - 1:+.0%}".replace("%", " %"),
                     f"{flat:.2f} ({flat / measured - 1:+.0%})".replace("%", " %")])
    return _table(["tokens", "dropout", "pass", "measured", "hwsim", "error",
                   "at the streaming rate"], rows)


def layer_22b_section() -> list[str]:
    """Korthikanti et al. 2022, Table 4 (one layer of the 22B model, tp 8, micro-batch 4)
    against hwsim, as ``tests/test_validation_multi.py`` configures and checks it (its
    published figures and its prediction are taken from there, so the two cannot differ)."""
    from tests.test_validation_multi import TABLE4, _layer_ms

    names = {("none", False): "no recomputation", ("none", True): "sequence parallel",
             ("full", False): "full recomputation", ("selective", False): "selective recomputation",
             ("selective", True): "selective + sequence parallel"}
    base_measured, base_predicted = sum(TABLE4[("none", False)]), sum(_layer_ms("none", False))
    rows = []
    for config, (forward, backward) in TABLE4.items():
        f, b = _layer_ms(*config)
        overhead = ([NONE, NONE] if config == ("none", False) else
                    [f"{(forward + backward) / base_measured - 1:+.0%}".replace("%", " %"),
                     f"{(f + b) / base_predicted - 1:+.0%}".replace("%", " %")])
        rows.append([names[config], f"{forward} ms", f"{f:.2f}", f"{backward} ms", f"{b:.2f}",
                     *overhead])
    return _table(["layer of the 22B model", "forward measured", "hwsim", "backward measured",
                   "hwsim", "overhead measured", "hwsim"], rows)


def conv_fits_section() -> list[str]:
    """The convolution fits of ``simulator.calibrate.conv`` on NeuSight's fp32 conv table and
    DeepBench's fp16 and fp32 ones: per GPU the rate, the fixed cost and the held-out error,
    with the spec's own."""
    from simulator.calibrate.conv import fit_deepbench_table, fit_table

    data = ROOT / "tests" / "data"
    fits = [("NeuSight", f) for f in fit_table(data / "neusight_conv_kernels.csv").values()]
    for precision in ("fp16", "fp32"):
        fits += [("DeepBench", f) for f in
                 fit_deepbench_table(data / "deepbench_conv.csv", precision).values()]
    rows = [[source, f.device, _code(f.catalogue), f.precision, f.passes, f"{f.rate:.2f}",
             f"{f.fixed_s * 1e6:.0f} µs", str(f.fitted_rows), str(f.held_out_rows),
             f"{100 * f.held_out_median_error:.1f} %", f"{100 * f.unfitted_median_error:.1f} %"]
            for source, f in fits]
    return _table(["table", "GPU", "spec", "format", "passes", "rate", "fixed cost", "fitted",
                   "held out", "held-out median |error|", "at the spec's efficiency"], rows)


def attention_kernels_section() -> list[str]:
    """The fused attention fits of ``simulator.calibrate.attention``: per device and kernel the
    rows, the in-sample and held-out (16k, 512 tokens) median and worst |error|."""
    import numpy as np

    from simulator.calibrate import attention

    rows = attention.load()
    fits = attention.fit_all(rows)
    errors = attention.errors(rows, fits)
    held = {longest: attention.held_out(rows, longest) for longest in (True, False)}

    def pair(values) -> str:
        if values is None:   # no row at that length (the B200's table starts at 2,048)
            return "-"
        values = np.abs(values)
        return f"{100 * np.median(values):.1f} % / {100 * values.max():.1f} %"

    out = []
    for device, kernel in attention.groups(rows):
        mine = np.array([(r["device"], r["kernel"]) == (device, kernel) for r in rows])
        passes = ", ".join(sorted({r["pass"] for r, m in zip(rows, mine) if m}))
        out.append([_code(device), kernel, passes, str(int(mine.sum())), pair(errors[mine]),
                    pair(held[True].get((device, kernel))),
                    pair(held[False].get((device, kernel)))])
    return _table(["device", "kernel", "passes", "rows", "in sample (median / worst)",
                   "held out: 16k", "held out: 512"], out)


def _benchmark(name: str):
    """The module ``benchmarks/<name>.py``: imported as ``benchmarks.<name>`` (a namespace
    package: benchmarks/ has no ``__init__.py``) where that is this tree's file, so that a
    process that has imported it already (the tests do) shares its cached results (the
    NeuSight labels' and the metered runs' predictions, ten seconds and more); else loaded
    from its file."""
    import importlib
    import importlib.util

    path = ROOT / "benchmarks" / f"{name}.py"
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError:
        module = None
    if module is not None and Path(module.__file__).resolve() == path.resolve():
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def neusight_labels_section() -> list[str]:
    """NeuSight's end-to-end fp32 training labels against hwsim
    (``benchmarks/neusight_labels.py``, which also prints it; validation, never fitted on)."""
    return _benchmark("neusight_labels").markdown_lines()


def metered_energy_section() -> list[str]:
    """hwsim's node energy per step against MLPerf Training's metered runs
    (``benchmarks/energy_validation.py``, which also prints it; validation, never fitted on)."""
    return _benchmark("energy_validation").section()


# ---------------------------------------------------------------------------------- files

SECTIONS: dict[str, dict[str, Callable[[], list[str]]]] = {
    "devices.md": {"devices": devices_section, "clusters": clusters_section},
    "model.md": {"zoo": zoo_section},
    "accuracy.md": {"kernels": kernels_section, "attention-core": attention_core_section,
                    "layer-22b": layer_22b_section, "neusight-labels": neusight_labels_section,
                    "conv-fits": conv_fits_section, "gemm-fits": gemm_fits_section,
                    "attention-kernels": attention_kernels_section,
                    "metered-energy": metered_energy_section},
}


def render(text: str, name: str, body: list[str], where: str = "") -> str:
    """``text`` with the lines between ``name``'s two markers replaced by ``body``."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"{where}: needs exactly one '{begin}' ... '{end}' pair, each marker on "
                         f"a line of its own")
    return pattern.sub(lambda _: "\n".join([begin, *body, end]), text)


def built(file: str) -> dict[str, list[str]]:
    """Every generated section of ``docs/<file>``, built from the data (name -> lines)."""
    return {name: build() for name, build in SECTIONS[file].items()}


def regenerate(text: str, file: str, sections: dict[str, list[str]] | None = None) -> str:
    """``text`` of ``docs/<file>`` with every generated section rebuilt from the data
    (``sections``: ``built(file)``'s result, where the caller has it already)."""
    sections = built(file) if sections is None else sections
    for name, body in sections.items():
        text = render(text, name, body, where=f"docs/{file}")
    return text


def generated(path: Path, sections: dict[str, list[str]] | None = None) -> str:
    """The text ``path`` should have: its own, with every generated section rebuilt."""
    return regenerate(path.read_text(encoding="utf-8"), path.name, sections)


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python docs/generate.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for file in SECTIONS:
        path = DOCS / file
        text = generated(path)
        if text != path.read_text(encoding="utf-8"):
            stale.append(file)
            if not check:
                path.write_text(text, encoding="utf-8")
    verb = "stale" if check else "rewrote"
    print(f"{verb}: {', '.join(stale)}" if stale else "docs: generated sections up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

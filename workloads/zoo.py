"""The model zoo: named presets, and workload TOML files for models that are not in it."""
from __future__ import annotations

import tomllib
from pathlib import Path

from simulator.errors import (WorkloadError, canonical, clean, did_you_mean, is_real,
                              read_input, shown)
from workloads import cnn, mlp
from workloads.base import Workload
from workloads.hf_config import is_hf_config, load_hf_config
from workloads.presets import TRANSFORMERS
from workloads.moe import MLA, MoE, Router
from workloads.transformer import Ffn, Head, Norm, Residual, Style, TransformerConfig

MODELS: dict[str, Workload] = {**TRANSFORMERS, **cnn.PRESETS, **mlp.PRESETS}
#: Names users give for zoo models beyond their loose spellings (``canonical``: resnet50,
#: llama-3-8b, meta-llama/Llama-2-7b-hf): the Hugging Face Hub's names of the same models.
ALIASES = {"gpt2": "gpt2-small", "bert-base-uncased": "bert-base",
           "bert-large-uncased": "bert-large", "vit-base-patch16-224": "vit-b16",
           "vit-large-patch16-224": "vit-l16", "meta-llama-3-8b": "llama3-8b",
           "meta-llama-3-70b": "llama3-70b", "meta-llama-3.1-8b": "llama3-8b",
           "meta-llama-3.1-70b": "llama3-70b", "meta-llama-3.1-405b": "llama3-405b"}
_SPELLINGS = {canonical(name): name for name in [*MODELS, *ALIASES]}

_REQUIRED = ("layers", "hidden", "heads", "vocab", "seq_len")
_OPTIONAL = {"kv_heads": int, "ffn_hidden": int, "ffn": Ffn, "norm": Norm, "name": str,
             "tied_embeddings": bool, "learned_positions": bool, "bias": bool, "dropout": bool,
             "attention_dropout": bool,
             "head_size": int, "residual": Residual, "mtp": int, "rotary_pct": float,
             "hf_eager": bool, "gelu_kernels": int, "mask_kernel": bool,
             "mask_clamp": bool, "kv_cache_views": bool, "embedding_dropout": bool,
             "packed_attention": float, "head": Head, "labels": int,
             # an encoder (BERT): its style, token-type table and position table
             "style": Style, "type_vocab": int, "positions": int}
#: ``[moe]`` (workloads.moe.MoE) and ``[mla]`` (workloads.moe.MLA): their keys and types
#: (float: a number; None in a type: the key may be left out).
_MOE = {"experts": int, "top_k": int, "shared_experts": int, "expert_ffn_hidden": int,
        "capacity_factor": float, "first_dense_layers": int, "router": Router,
        "router_bias": bool, "shared_gate": bool, "imbalance": float, "max_nodes": int,
        "pad_to_capacity": bool}
_MOE_REQUIRED = ("experts", "top_k")
_MLA = {"kv_lora_rank": int, "qk_nope_head_dim": int, "qk_rope_head_dim": int,
        "v_head_dim": int, "q_lora_rank": int}
_MLA_REQUIRED = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def list_models() -> list[str]:
    return list(MODELS)


def zoo_name(spec: str) -> str | None:
    """The zoo model ``spec`` names, as written, as an alias or loosely spelled; else None."""
    if spec in MODELS:
        return spec
    name = _SPELLINGS.get(canonical(spec))
    return ALIASES.get(name, name)


def get_workload(spec: str | Workload) -> Workload:
    """A zoo name, a workload TOML file, ``(torch module, example inputs)``, or a workload
    object passed through."""
    if isinstance(spec, tuple) and len(spec) == 2:
        from workloads.torch_import import import_module  # needs the torch extra
        return import_module(*spec)
    if not isinstance(spec, str):
        return spec
    if not spec.strip():   # not the current folder, which Path("") names
        raise WorkloadError("the model is empty: give a zoo name (see 'hwsim models'), a "
                            "Hugging Face config.json, a workload .toml file, a .onnx file or "
                            "file.py:factory")
    if spec.endswith(".toml"):
        return load_workload_toml(spec)
    if is_hf_config(spec):
        return load_hf_config(spec)
    if _is(spec, "config.json"):
        # a downloaded model's folder, as from_pretrained takes it: its config.json, not the
        # zoo model its name spells (a fine-tuned Llama-2-7b-hf/ keeps its own figures)
        return load_hf_config(Path(spec) / "config.json")
    if spec.endswith(".onnx"):
        from workloads.onnx_import import load_onnx  # needs the onnx extra
        return load_onnx(spec)
    if ".py:" in spec:
        from workloads.torch_import import load_factory  # needs the torch extra
        return load_factory(spec)
    name = zoo_name(spec)
    if name is not None:
        return MODELS[name]
    if _is(spec):
        raise WorkloadError(f"{shown(spec, 200)} is a folder without a config.json: give a "
                            "Hugging Face config.json (or its folder), a workload .toml, "
                            "a .onnx file or file.py:factory")
    raise WorkloadError(f"unknown model {shown(spec, 200)}{did_you_mean(spec, MODELS)}: see "
                        "'hwsim models' for the zoo, or give a Hugging Face config.json, a "
                        "workload .toml file, a .onnx file or file.py:factory")


def _is(spec: str, file: str | None = None) -> bool:
    """Whether ``spec`` is a folder (holding ``file``); False for any name no path can be
    (too long, a NUL byte)."""
    try:
        return (Path(spec) / file).is_file() if file else Path(spec).is_dir()
    except (OSError, ValueError):
        return False


def load_workload_toml(path: str | Path) -> TransformerConfig:
    """``[transformer]`` with layers, hidden, heads, vocab, seq_len and optional fields;
    ``[moe]`` (a mixture of experts: experts, top_k, ...) and ``[mla]`` (multi-head latent
    attention) optional (``workloads.moe``)."""
    path = Path(path)
    data = read_input(path, "workload", WorkloadError)  # a regular file of at most 1 MiB
    path = Path(shown(str(path), 200)[1:-1])             # as errors show it: one clean line
    try:
        data = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        message = " ".join(str(err).split())
        raise WorkloadError(f"{path}: not valid TOML ({message}); fix the syntax") from None
    except RecursionError:
        raise WorkloadError(f"{path}: not valid TOML (arrays or tables nested too "
                            "deeply)") from None
    table = data.get("transformer")
    if not isinstance(table, dict):
        raise WorkloadError(f"{path}: missing [transformer] table (with {', '.join(_REQUIRED)})")
    tables = set(data) - {"transformer", "moe", "mla"}
    if tables:
        raise WorkloadError(f"{path}: unknown table {sorted(tables)[0]!r}: allowed are "
                            "[transformer], [moe] and [mla]")
    unknown = set(table) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise WorkloadError(f"{path}: unknown key {sorted(unknown)[0]!r}: allowed are "
                            f"{', '.join(_REQUIRED + tuple(_OPTIONAL))}")
    kwargs = {"name": _typed(path, "name", table.get("name", path.stem), str)}
    for key in _REQUIRED:
        if key not in table:
            raise WorkloadError(f"{path}: [transformer] {key} is missing: add {key} = <int>")
        kwargs[key] = _integer(path, key, table[key])
    for key, kind in _OPTIONAL.items():
        if key in table and key not in ("name", "mtp"):
            kwargs[key] = _typed(path, key, table[key], kind)
    if kwargs.get("style") is Style.VISION:
        # a ViT's sequence is its patches (image_size, patch: no keys here): seq_len would be
        # ignored and vocab read as classes
        raise WorkloadError(f"{path}: [transformer] style = 'vision' cannot be described in a "
                            "file (its image size and patch are not keys): use a vit-* model "
                            "of the zoo, or style = 'decoder' | 'encoder'")
    if "mtp" in table:   # 0 or 1 (TransformerConfig checks it)
        kwargs["mtp"] = table["mtp"]
    for name, keys, required, kind in (("moe", _MOE, _MOE_REQUIRED, MoE),
                                       ("mla", _MLA, _MLA_REQUIRED, MLA)):
        if name in data:
            kwargs[name] = _sub_table(path, name, data[name], keys, required, kind)
    try:
        return TransformerConfig(**kwargs)
    except WorkloadError as err:
        raise WorkloadError(f"{path}: {err}") from None


def _integer(path: Path, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WorkloadError(f"{path}: [transformer] {key} = {value!r} must be a positive integer")
    return value


def _typed(path: Path, key: str, value, kind):
    if kind is int:
        return _integer(path, key, value)
    if kind is float:
        if not is_real(value):
            raise WorkloadError(f"{path}: [transformer] {key} = {value!r} must be a number")
        return float(value)
    if kind is bool or kind is str:
        if not isinstance(value, kind) or (kind is str and (
                not value.strip() or len(value) > 200 or clean(value) != value)):
            what = "line of text (at most 200 characters)" if kind is str else kind.__name__
            raise WorkloadError(f"{path}: [transformer] {key} = {value!r} must be a {what}")
        return value
    try:
        return kind(value)
    except ValueError:
        choices = " | ".join(repr(m.value) for m in kind)
        raise WorkloadError(f"{path}: [transformer] {key} = {value!r}: choose {choices}") from None


def _sub_table(path: Path, name: str, table, keys: dict, required: tuple, kind):
    """``[moe]`` or ``[mla]`` read into ``kind`` (WorkloadError naming the file and key)."""
    if not isinstance(table, dict):
        raise WorkloadError(f"{path}: {name} must be a table [{name}]")
    unknown = set(table) - set(keys)
    if unknown:
        raise WorkloadError(f"{path}: [{name}] unknown key {sorted(unknown)[0]!r}: allowed "
                            f"are {', '.join(keys)}")
    fields = {}
    for key in required:
        if key not in table:
            raise WorkloadError(f"{path}: [{name}] {key} is missing: add {key} = <int>")
    for key, value in table.items():
        expected = keys[key]
        if expected is float:
            if not is_real(value):
                raise WorkloadError(f"{path}: [{name}] {key} = {value!r} must be a number")
            fields[key] = float(value)
        elif expected is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorkloadError(f"{path}: [{name}] {key} = {value!r} must be an integer")
            fields[key] = value
        elif expected is bool:
            if not isinstance(value, bool):
                raise WorkloadError(f"{path}: [{name}] {key} = {value!r} must be true or false")
            fields[key] = value
        else:
            fields[key] = value   # an enum: the dataclass names the choices
    try:
        return kind(**fields)
    except WorkloadError as err:
        raise WorkloadError(f"{path}: {err}") from None

"""Errors for a user's mistake. The CLI prints ``str(error)`` as one line and exits non-zero."""


class HwsimError(Exception):
    """Base of every error caused by user input (never by a bug in hwsim)."""


class SpecError(HwsimError):
    """A device or cluster spec is malformed: names the file, the key and the fix."""


class WorkloadError(HwsimError):
    """A model cannot be built: unknown name, bad TOML workload, impossible shape."""


class PlanError(HwsimError):
    """A plan cannot run: bad precision, batch, recomputation or parallel split."""


def canonical(name: str) -> str:
    """A name as users spell it loosely: lower case, without an organisation prefix
    (``meta-llama/``), a ``-hf`` suffix, hyphens, underscores or spaces (``Llama-2-7b-hf``,
    ``llama-2-7b`` and ``llama2-7b`` are one name)."""
    text = name.strip().lower().rpartition("/")[2].removesuffix("-hf")
    return "".join(ch for ch in text if ch not in "-_ ")


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean a, b?)`` naming up to three of ``choices`` closest to ``name``
    (``difflib``, on the names as given and on their ``canonical`` forms), or ``""``."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(name.strip().lower(), choices, n=3, cutoff=0.6)
    by_canonical = {canonical(c): c for c in choices}
    for key in difflib.get_close_matches(canonical(name), list(by_canonical), n=3, cutoff=0.6):
        if by_canonical[key] not in close:
            close.append(by_canonical[key])
    return f" (did you mean {', '.join(close[:3])}?)" if close else ""

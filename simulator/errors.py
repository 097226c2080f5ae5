"""Errors, and the checks every input passes on its way in.

A user's mistake is a ``HwsimError`` (the CLI prints ``str(error)`` as one line and exits 2);
a figure hwsim computed that breaks one of its own invariants is an ``InternalError`` (a bug in
hwsim, reported as such, never printed as an answer). ``bounded`` is the one check of a number
that enters (from the command line, the API, a spec, workload or cluster file): a finite number
of the right type within the bounds its schema states, or one line naming the field, the value
and the bound; ``is_real``, ``in_interval`` and ``is_fraction`` are its test alone, for the
checks that word their own line (a share "in (0, 1] on an encoder", an efficiency "a fraction
of peak"). ``read_input`` is the one way an input file is read: a regular file of bounded
size (a FIFO, a device or a folder is refused without blocking).
"""
from __future__ import annotations

import datetime
import math
import numbers
import os
import stat
import unicodedata


class HwsimError(Exception):
    """Base of every error caused by user input (never by a bug in hwsim)."""


class SpecError(HwsimError):
    """A device or cluster spec is malformed: names the file, the key and the fix."""


class WorkloadError(HwsimError):
    """A model cannot be built: unknown name, bad TOML workload, impossible shape."""


class PlanError(HwsimError):
    """A plan cannot run: bad precision, batch, recomputation or parallel split."""


class InternalError(Exception):
    """A result broke one of hwsim's own invariants (a figure not finite, a utilisation above
    1, power above the TDP): a bug in hwsim, not in the input."""


#: The largest input file read (spec, workload, cluster TOML): 1 MiB; the catalogue's biggest
#: is under 10 KiB.
MAX_TEXT_BYTES = 1 << 20


def is_real(value) -> bool:
    """Whether ``value`` is a real number and not a bool (``True`` is an int to Python, never
    a figure)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def in_interval(value, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> bool:
    """Whether ``value`` is a real number (``is_real``) in [low, high], an end open where
    asked; nan never is."""
    if not is_real(value):
        return False
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return bool(above and below)


def is_fraction(value) -> bool:
    """Whether ``value`` is a real number in (0, 1], not a bool: an efficiency, a share of
    positions, the part of a head a rotary embedding turns."""
    return in_interval(value, 0.0, 1.0, low_open=True)


def bounded(value, name: str, low: float, high: float, *, integer: bool = False,
            unit: str = "", error: type[HwsimError] = PlanError, low_open: bool = False):
    """``value`` if it is a finite number (an int where ``integer``) in [low, high] -- (low,
    high] where ``low_open`` -- else ``error`` naming ``name``, the value and the bound."""
    unit = f" {unit}" if unit else ""
    what = "an integer" if integer else "a number"
    if not is_real(value) or (integer and not isinstance(value, numbers.Integral)):
        raise error(f"{name} = {shown(value)} must be {what}")
    if integer:
        value = int(value)
    elif not math.isfinite(value):
        raise error(f"{name} = {shown(value)} must be a finite number")
    if not in_interval(value, low, high, low_open=low_open):
        bracket = "(" if low_open else "["
        raise error(f"{name} = {shown(value)}{unit} is outside {bracket}{low:g}, {high:g}]{unit}")
    return value


def shown(value, limit: int = 60) -> str:
    """``repr(value)`` fit for one line of a terminal: control characters escaped, long text
    cut to ``limit`` characters in its middle (a path keeps its file name). A TOML date, time
    or date-time is shown in its ISO form (``2026-12-04T10:00:00``, as a spec writes it), not
    as Python's ``datetime.datetime(...)``."""
    if isinstance(value, (datetime.date, datetime.time)):
        text = clean(value.isoformat())
    else:
        text = clean(repr(value))
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return text[:head] + "..." + text[len(text) - (limit - 3 - head):]


def clean(text: str) -> str:
    """``text`` with control and format characters (newlines, terminal escapes) escaped."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else ascii(ch)[1:-1]
                   for ch in str(text))


def read_input(path, what: str, error: type[HwsimError], max_bytes: int = MAX_TEXT_BYTES,
               hint: str = "") -> bytes:
    """The bytes of the input file ``path`` (a ``what``: "device spec", "workload"): a regular
    file of at most ``max_bytes``, opened without blocking (a FIFO is refused, not waited on),
    or ``error`` saying why (``hint``: what to do instead, after a missing file's line)."""
    name = shown(str(path), 120)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"no {what} file {name}{hint}") from None
    except (OSError, ValueError) as err:   # ValueError: a NUL in the path
        reason = getattr(err, "strerror", None) or str(err)
        raise error(f"{name}: cannot read the {what} file ({reason})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name}: the {what} file must be a regular file, not "
                        f"{_kind(info.st_mode)}")
        if info.st_size > max_bytes:
            raise error(f"{name}: the {what} file has {info.st_size:,} bytes, more than the "
                        f"{max_bytes:,} allowed")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise error(f"{name}: the {what} file has more than the {max_bytes:,} bytes "
                            "allowed")
        return b"".join(chunks)
    except OSError as err:
        raise error(f"{name}: cannot read the {what} file ({err.strerror})") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "a special file")


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

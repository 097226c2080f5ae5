"""Writing files and showing progress: the one atomic writer and the one progress bar.

``write_atomic`` is what every file hwsim writes goes through (traces, plots, sweep rows,
calibrated specs, records): the content goes to a new file beside the target -- an
unpredictable name, created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so that it neither
follows a link planted there nor opens a file that already exists -- which is then renamed
over the target. A reader sees the old file or the new one, never half of one; the rename
replaces a link at the target rather than writing through it; on an error the temporary file
is removed and the target is left as it was, and the error is one HwsimError line.
``writable`` checks a target before any work is done (``--out`` of sweep, plan, plot).
"""
from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from simulator.errors import HwsimError, shown

_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
          | getattr(os, "O_BINARY", 0))
_ATTEMPTS = 100


def write_atomic(path: str | os.PathLike,
                 content: str | bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` to ``path`` atomically; the path. ``content``: text (UTF-8), bytes, or
    a function writing to the binary file it is given (``frame.to_parquet``,
    ``fig.savefig``). The file gets the permissions of a new file (0666 less the umask)."""
    path = Path(path)
    try:
        fd, tmp = _create_beside(path)
    except OSError as err:
        raise HwsimError(f"{shown(str(path), 120)}: cannot write there "
                         f"({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, str):
                handle.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):   # a full disk, a folder at the target, ...
            raise HwsimError(f"{shown(str(path), 120)}: cannot write it "
                             f"({err.strerror or err})") from None
        raise
    return path


def writable(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` if a file can be written there (checked before any work: a new file is made
    and removed beside it), else a HwsimError naming ``flag``: a folder, a device or a FIFO at
    the path, a missing folder, a folder not writable (/proc, /sys, read-only mounts)."""
    path = Path(path)
    name = f"{flag} {shown(str(path), 120)}"
    try:
        if path.is_dir():
            raise HwsimError(f"{name}: is a folder; give a file name in it")
        if path.exists() and not path.is_file():
            raise HwsimError(f"{name}: is not a regular file")
        if not path.parent.is_dir():
            raise HwsimError(f"{name}: the folder {shown(str(path.parent), 120)} does not exist")
        fd, tmp = _create_beside(path)
    except OSError as err:    # a name too long, a folder we may not list
        raise HwsimError(f"{name}: cannot write there ({err.strerror or err})") from None
    os.close(fd)
    tmp.unlink(missing_ok=True)
    return path


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty file in ``path``'s folder with an unpredictable name: (descriptor, path)."""
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name after {_ATTEMPTS} tries")


class TableFile:
    """A .csv or .parquet file that a table (a ``DataFrame``) is written to, atomically, as
    often as it changes: ``hwsim sweep --out``, ``hwsim plan --out``. Checked when made
    (HwsimError naming the file): the suffix, that a file can be written there (``writable``),
    pyarrow for parquet."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out)
        self.kind = self.path.suffix.lower()
        if self.kind not in (".csv", ".parquet"):
            raise HwsimError(f"--out {shown(str(out), 120)}: write a .csv or .parquet file")
        writable(self.path)
        if self.kind == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise HwsimError('--out .parquet needs pyarrow: pip install "hwsim[sweep]", '
                                 "or write a .csv file") from None
        self._claim()

    def _claim(self) -> None:
        """Hold the target for this process: a second hwsim writing the same file (another
        sweep or plan) is refused in one line instead of silently replacing this one's rows.
        An advisory lock (``flock``) on ``.NAME.lock`` beside the target; the kernel drops it
        when the process ends, however it ends, and the file goes at a normal exit."""
        import atexit
        import fcntl

        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise HwsimError(f"--out {shown(str(self.path), 120)}: cannot claim it "
                             f"({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise HwsimError(f"--out {shown(str(self.path), 120)} is being written by another "
                             "hwsim: wait for it, or give another file") from None
        self._lock, self._lock_path = fd, lock
        atexit.register(self.release)

    def release(self) -> None:
        """Give the target up: when done with it (sweep and plan do), else at exit."""
        fd, self._lock = getattr(self, "_lock", None), None
        if fd is not None:
            try:
                os.unlink(self._lock_path)
            except OSError:
                pass
            os.close(fd)

    def write(self, table) -> None:
        if self.kind == ".csv":
            write_atomic(self.path, table.to_csv(index=False))
        else:
            write_atomic(self.path, lambda handle: table.to_parquet(handle, index=False))


def progress_bar(done: int, total: int, label: str = "") -> None:
    """A one-line bar on stderr, redrawn in place: ``[####......] 3/10 label``; the line ends
    when ``done`` reaches ``total``."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:40s}", end=end,
          file=sys.stderr, flush=True)


__all__ = ["TableFile", "progress_bar", "writable", "write_atomic"]

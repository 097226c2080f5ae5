"""Errors for a user's mistake. The CLI prints ``str(error)`` as one line and exits non-zero."""


class HwsimError(Exception):
    """Base of every error caused by user input (never by a bug in hwsim)."""


class SpecError(HwsimError):
    """A device or cluster spec is malformed: names the file, the key and the fix."""


class WorkloadError(HwsimError):
    """A model cannot be built: unknown name, bad TOML workload, impossible shape."""


class PlanError(HwsimError):
    """A plan cannot run: bad precision, batch, recomputation or parallel split."""

"""User-facing errors: one line, non-zero exit, no traceback.

Everything a user can cause (bad params, missing or corrupt data, missing weights) raises a subclass of
ClassPruneError; the CLI prints ``error: <message>`` and exits with status 2.
"""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (its type when it has none): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ClassPruneError(Exception):
    """An error the user can fix; its message is one actionable line."""


class ConfigError(ClassPruneError):
    """params.yaml (or a profile) is invalid."""


class DataError(ClassPruneError):
    """A dataset, image, CSV or cache is missing or unreadable."""


class CheckpointError(ClassPruneError):
    """A checkpoint is missing, corrupt, or not loadable with weights_only=True."""


class ExportError(ClassPruneError):
    """An exported file would not keep the model's promise (e.g. quantization moved a pruned zero)."""

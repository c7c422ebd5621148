"""The errors a user can cause and fix (as opposed to bugs): the CLIs print them in one line.

Every class here is a ``ValueError`` so that library callers catching ``ValueError`` (as the
code did before these classes existed) keep working; ``cli.py`` turns them, and the other
expected errors it lists, into ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations


class UserError(ValueError):
    """Base of the errors caused by input (config, files, checkpoints), not by a bug."""

    def __str__(self) -> str:  # never quoted, even where KeyError is a base (ConfigKeyError)
        return str(self.args[0]) if self.args else ""


class ConfigError(UserError):
    """A config key or value that cannot work: unknown key, impossible value, unsafe name."""


class ConfigKeyError(ConfigError, KeyError):
    """A required config key is missing (a ``KeyError`` too, as RecBole raises there)."""


class CheckpointError(UserError):
    """A checkpoint that is corrupt, needs unpickling, or belongs to another model."""


class RunFailedError(UserError):
    """A run that ended without a usable validation score: recorded as failed, not a result."""


class StaleDatasetError(UserError):
    """Preprocessed files made from other raw files, text model or format version."""

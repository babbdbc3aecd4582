"""The error hierarchy every facescale package raises for bad input or bad state.

A `FacescaleError` carries a message written for a person: the CLI prints it as one
line and exits non-zero, without a traceback. This module imports nothing else of
facescale, so every package (storage included) may raise these.
"""


class FacescaleError(Exception):
    """Base class: an expected failure with a message fit to show a user."""

    exit_code = 2


class ConfigError(FacescaleError):
    """The configuration (defaults, YAML file, environment) is invalid."""


class StorageError(FacescaleError):
    """A dataset, shard, manifest or registry could not be read or written."""


class NotFoundError(StorageError):
    """A named dataset version, run, model or identity does not exist."""


class ManifestError(StorageError):
    """A manifest or registry file exists but is malformed."""


class IntegrityError(StorageError):
    """Stored data does not match its recorded row counts or checksums."""


class ConflictError(StorageError):
    """The write would overwrite something immutable (a committed version, a label)."""


class InvalidIdentityError(FacescaleError):
    """An identity name is unusable (empty, control characters, too long)."""

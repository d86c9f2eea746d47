"""The errors OnTheFly raises.

Every message says what happened, the value involved, and what to do next.
Only the CLI catches them (one line, non-zero exit; the traceback with --debug).
"""

from __future__ import annotations

__all__ = [
    "OnTheFlyError",
    "StoreError",
    "SchemaError",
    "CorruptFileError",
    "ChecksumError",
    "MissingFileError",
    "QueryError",
    "ConfigError",
    "TrainingError",
    "ProtocolError",
    "BundleError",
]


class OnTheFlyError(Exception):
    """Base class of every error OnTheFly raises on purpose."""


class StoreError(OnTheFlyError):
    """The session store cannot do what was asked."""


class SchemaError(StoreError):
    """A catalog's schema is not the one this version of OnTheFly speaks."""


class CorruptFileError(StoreError):
    """A store file (shard, catalog, checkpoint) cannot be read."""


class ChecksumError(CorruptFileError):
    """A file's bytes do not match the sha256 the catalog recorded."""


class MissingFileError(StoreError):
    """A file the catalog lists is not on disk."""


class QueryError(OnTheFlyError):
    """A query was refused or failed."""


class ConfigError(OnTheFlyError):
    """An argument or input is not usable; raised before any work starts."""


class TrainingError(OnTheFlyError):
    """Training cannot go on (for example, repeated non-finite losses)."""


class ProtocolError(OnTheFlyError):
    """The dashboard link received something it cannot accept."""


class BundleError(OnTheFlyError):
    """An exported session bundle is malformed, hostile or of another format."""

"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits 1."""


class LlastError(Exception):
    """Base of all user-facing errors: the message names the file/key and the problem."""


class ConfigError(LlastError, ValueError):
    """A config file, key or value that does not fit the schema."""


class AudioError(LlastError, ValueError):
    """Audio that cannot be used: missing, unreadable, empty, silent, NaN, too long."""


class DataError(LlastError, ValueError):
    """A corpus file (TSV, manifest, YAML) that is malformed; names the file and line."""


class CheckpointError(LlastError, ValueError):
    """A checkpoint directory that is incomplete or does not match its config."""


class AssetError(LlastError, RuntimeError):
    """A bundled model that cannot be installed, converted or verified."""


class OutputError(ConfigError, DataError, CheckpointError):
    """An output folder that a command may not write into (it holds something that is not its own). A kind of
    each error the writing commands raised for their output paths before llast.outdir, so code that catches
    those still catches it."""

"""Errors of the heads package: each message names the problem and where it is."""


class HeadsError(Exception):
    """Base class: the CLI prints the message and exits with status 2, no traceback."""


class ConfigError(HeadsError):
    """A training config with unknown keys, wrong types or out-of-range values."""


class DataError(HeadsError):
    """Training data that cannot be used: missing columns, empty rows, too few examples."""


class ArtifactError(HeadsError):
    """A model version that is corrupt, partial or incompatible with the running embedder."""


class RegistryError(HeadsError):
    """An unknown model or version, or an invalid name."""

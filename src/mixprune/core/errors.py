"""Typed errors that mixprune raises for bad input.

Library code raises these; `mixprune.cli` turns each into a one-line message and exit code 2.
Every message says what is wrong, where, and how to fix it.
"""


class MixpruneError(Exception):
    """Base class for every error that the CLI reports as a one-line message."""


class ConfigError(MixpruneError, ValueError):
    """A configuration value (flag, config file field) is invalid."""


class DataError(MixpruneError):
    """Dataset files are missing, truncated, corrupt or not what they claim to be."""


class ModelFileError(MixpruneError):
    """A model file cannot be loaded safely or does not match the expected architecture."""


class OutputError(MixpruneError):
    """An output location cannot be written."""


class WorkerDied(MixpruneError):
    """A worker process (or a Ray task's worker or node) ended without a result: killed from outside."""

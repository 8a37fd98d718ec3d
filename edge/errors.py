"""Errors users see: each says what is wrong and what to do about it."""


class DrsnEdgeError(Exception):
    """Base class of every error drsn-edge raises on purpose."""


class DataError(DrsnEdgeError, ValueError):
    """The data given cannot be used as it is (missing, malformed, too short, NaN)."""


class RunError(DrsnEdgeError):
    """A training run directory is missing or incomplete."""

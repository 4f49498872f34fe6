"""The project's exception types: one base class, one subclass per kind of bad input."""

from __future__ import annotations


class FdrmflError(Exception):
    """Base class of every error this project raises on purpose."""


class InputDataError(FdrmflError):
    """The input data cannot be turned into a valid multi-modal dataset."""


class MissingFileError(InputDataError):
    """A configured input file or directory does not exist."""


class MissingColumnError(InputDataError):
    """A column the configuration names is not in the input table."""


class NonNumericColumnError(InputDataError):
    """A column that must hold numbers holds something else."""


class NonFiniteValueError(InputDataError):
    """NaN or infinite values in the inputs or the target."""


class EmptyDataError(InputDataError):
    """The input has no rows (or no usable columns)."""


class ShapeMismatchError(InputDataError):
    """A modality's columns do not match its declared shape."""


class DuplicateSampleIdError(InputDataError):
    """Two rows share a sample id."""


class OverlappingModalityError(InputDataError):
    """One column is claimed by two modalities."""


class PartitionError(FdrmflError):
    """A partition scheme cannot produce a valid client/split assignment."""


class ConfigError(FdrmflError):
    """Parameters that are individually valid but inconsistent with the data."""

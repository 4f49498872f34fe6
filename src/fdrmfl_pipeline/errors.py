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


class PrivacyBudgetError(ConfigError):
    """The configured differential-privacy noise would spend more than the budget allows;
    raised before any training."""


class StoredArtifactError(FdrmflError):
    """A stored artifact (a version of a catalog dataset) cannot be read: truncated, corrupt or
    not in the expected safe format."""


class CheckpointError(FdrmflError):
    """A training checkpoint cannot be written, or is not a weights-only file."""


class NonFiniteModelError(FdrmflError):
    """Training produced NaN or infinite weights, features or metrics; nothing is saved."""


class MissingExtraError(FdrmflError, ImportError):
    """An optional dependency (a pip extra) is needed for the chosen setting."""


class TuningError(FdrmflError):
    """A tuning study cannot make progress (every trial fails, the storage does not answer)."""


class UnsafePathError(FdrmflError):
    """A path in a submitted job lies outside the folder it may use."""


def describe_load_failure(exc: BaseException) -> str:
    """A short reason for a failed load; a refused pickle is said as such (never with the
    library's advice on how to load it anyway)."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return "it holds pickled Python objects, which this project never loads (they can run code)"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

"""Errors raised by geomlops.

Every error names the thing that was wrong (a field, a file, a parameter) and what was
expected. The underlying cause is kept with ``raise ... from err``.
"""

from __future__ import annotations

#: exit code of a step whose error is permanent: a retry would fail the same way
PERMANENT_EXIT_CODE = 3


class GeomlopsError(Exception):
    """Base class of every error geomlops raises on purpose."""


class PermanentError(GeomlopsError):
    """Base of errors that retrying cannot fix (bad input, a broken contract, something not
    found); a step template exits with :data:`PERMANENT_EXIT_CODE` and is not retried."""


class ModelNotFoundError(PermanentError):
    """Raised when a model id is not in the catalogue."""


class InvalidModelItemError(PermanentError):
    """Raised when a model's STAC item lacks an MLM field or has a wrong value."""


class SchemaUnavailableError(GeomlopsError):
    """Raised when a JSON schema an item declares cannot be found offline."""


class DatasetNotFoundError(PermanentError):
    """Raised when DVC does not know a dataset path at the requested revision."""


class InvalidDatasetError(PermanentError):
    """Raised when an evaluation dataset is incomplete or inconsistent: a chip without its label,
    rasters that differ in size or CRS, label values no class matches, an unreadable label item."""


class InvalidPackageError(PermanentError):
    """Raised when a model package (MLproject, Dockerfile, MLM item) is incomplete or wrong."""


class PackageOutputError(PermanentError):
    """Raised when a package's own entry point wrote something geomlops cannot use (a raster on
    another grid, a GeoJSON that is not longitude/latitude polygons of the item's classes): the
    package must be fixed and registered again, so it is not retried."""


class TrainingFailedError(GeomlopsError):
    """Raised when the model package's training entry point exits non-zero."""


class EvaluationFailedError(GeomlopsError):
    """Raised when the model package's ``evaluate`` entry point exits non-zero."""


class PackageEnvironmentError(GeomlopsError):
    """Raised when a model package's own environment cannot be built (installing failed)."""


class MissingInterpreterError(PackageEnvironmentError, PermanentError):
    """Raised when no Python on this machine satisfies the version a package declares."""


class RegistryError(GeomlopsError):
    """Raised when the MLflow model registry refuses an operation."""


class CatalogError(GeomlopsError):
    """Raised when the STAC catalogue cannot be read or written."""


class ManifestError(GeomlopsError):
    """Raised when a workflow manifest is malformed or fails validation."""


class UnsupportedFeatureError(ManifestError):
    """Raised when a manifest uses an Argo feature the local runner does not execute."""


class ParameterError(PermanentError):
    """Raised when a workflow parameter is undeclared, missing or malformed."""


class RunError(GeomlopsError):
    """Raised when a local workflow run fails or cannot be resumed."""


class SubmitError(GeomlopsError):
    """Raised when a workflow cannot be submitted to an Argo server."""


class ItemNotFoundError(CatalogError, PermanentError):
    """Raised when a collection or item is not in the catalogue."""


class InvalidItemError(CatalogError, PermanentError):
    """Raised when an item is refused by the catalogue: it fails its schemas, has an invalid
    geometry or lacks what the store needs; nothing of the batch it came in is written."""


class CatalogUnavailableError(CatalogError):
    """Raised when the catalogue's database or STAC API cannot be reached or is not set up."""


class AoiError(PermanentError):
    """Raised when an area of interest is unreadable, empty, invalid or outside the imagery."""


class ConfigurationError(GeomlopsError):
    """Raised when settings contradict their profile (e.g. ``services`` without an MLflow server)."""


class TrackingUnavailableError(GeomlopsError):
    """Raised when the MLflow tracking server does not answer: the message names its address
    (credentials hidden) and the setting that points at it."""


class ObjectStoreUnavailableError(GeomlopsError):
    """Raised when the S3 object store (MinIO) cannot be reached: the message names its endpoint
    and the settings that point at it."""


class DevStackError(GeomlopsError):
    """Raised when a service of the local stack (``geomlops dev``) cannot start, answer or stop."""


class ImageryMismatchError(PermanentError):
    """Raised when imagery does not match what the model's MLM input declares."""


class VectorizeError(GeomlopsError):
    """Raised when a mask cannot be vectorized: bad block size, dtype, scheduler or output path."""


class PostprocessorError(GeomlopsError):
    """Raised when a model output names a post-processor that is not registered, or none fits."""


class PromotionError(GeomlopsError):
    """Raised when a promotion or rollback is refused (policy, approval, missing STAC item,
    stale comparison) or cannot be recorded; the production alias has not moved."""


class PromotionRequestError(PromotionError, PermanentError):
    """Raised when a promotion or rollback cannot be carried out as asked (an unknown version, a
    candidate already in production, a missing STAC item, a report of another comparison, a bad
    approver or policy): the same request gives the same answer, so the step is not retried."""


class PromotionRefusedError(PromotionError, PermanentError):
    """Raised when the policy refuses a promotion (the candidate is worse than production beyond
    the tolerance, and the approver did not override it): the same inputs give the same answer,
    so the step is not retried; the refusal is recorded once."""


class IncomparableVersionsError(PromotionRequestError):
    """Raised when the candidate's and production's items name other classes (or another
    positive class): their scores cannot be compared class by class, whatever the retry."""


class ServingError(GeomlopsError):
    """Raised when a model cannot be served: a bad model reference, manifests that cannot be
    written or applied, or a model server that does not start."""


class ChipError(ServingError):
    """Raised when an image chip posted for inference is refused: not a readable GeoTIFF, no
    georeference, wrong band count, too large."""

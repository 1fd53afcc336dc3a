"""reviewbus events: plain frozen pydantic v2 models, no I/O. Import only stdlib and pydantic."""

from .base import SCHEMA_VERSION, Event, Model, new_id, utcnow
from .change import AcceptedChange, ChangedFile, CIRun, CommitEvent, NormalizedChange, ReviewRequest
from .inference import (
    CHANGE_TYPES,
    SEVERITY_ORDER,
    ChangeType,
    Dimension,
    Finding,
    InferenceRequest,
    InferenceResult,
    Risk,
    Role,
    Severity,
    Status,
    Usage,
)
from .jobs import JobState, TrainingJobEvent
from .ops import (
    DeadLetter,
    FailureEvent,
    Feedback,
    HealingAction,
    LifecycleAction,
    LifecycleEvent,
    QuarantineEvent,
    VersionState,
)
from .review import ReviewFindings, ShadowComparison
from .versions import Registry, VersionEntry, VersionSpec

__all__ = [
    "CHANGE_TYPES",
    "SCHEMA_VERSION",
    "SEVERITY_ORDER",
    "AcceptedChange",
    "CIRun",
    "ChangeType",
    "ChangedFile",
    "CommitEvent",
    "DeadLetter",
    "Dimension",
    "Event",
    "FailureEvent",
    "Feedback",
    "Finding",
    "HealingAction",
    "InferenceRequest",
    "InferenceResult",
    "JobState",
    "LifecycleAction",
    "LifecycleEvent",
    "Model",
    "NormalizedChange",
    "QuarantineEvent",
    "Registry",
    "ReviewFindings",
    "ReviewRequest",
    "Risk",
    "Role",
    "Severity",
    "ShadowComparison",
    "Status",
    "TrainingJobEvent",
    "Usage",
    "VersionEntry",
    "VersionSpec",
    "VersionState",
    "new_id",
    "utcnow",
]

"""reviewbus events: plain frozen pydantic v2 models, no I/O. Import only stdlib and pydantic."""

from .base import SCHEMA_VERSION, Event, Model, new_id, utcnow
from .change import AcceptedChange, ChangedFile, CIRun, CommitEvent, NormalizedChange, ReviewRequest
from .inference import (
    CHANGE_TYPES, SEVERITY_ORDER, ChangeType, Dimension, Finding, InferenceRequest,
    InferenceResult, Risk, Role, Severity, Status, Usage,
)
from .ops import (
    DeadLetter, FailureEvent, Feedback, HealingAction, LifecycleAction, LifecycleEvent,
    QuarantineEvent, VersionState,
)
from .review import ReviewFindings, ShadowComparison
from .versions import Registry, VersionEntry, VersionSpec

__all__ = [
    "SCHEMA_VERSION", "Event", "Model", "new_id", "utcnow",
    "AcceptedChange", "ChangedFile", "CIRun", "CommitEvent", "NormalizedChange", "ReviewRequest",
    "CHANGE_TYPES", "SEVERITY_ORDER", "ChangeType", "Dimension", "Finding", "InferenceRequest",
    "InferenceResult", "Risk", "Role", "Severity", "Status", "Usage",
    "DeadLetter", "FailureEvent", "Feedback", "HealingAction", "LifecycleAction", "LifecycleEvent",
    "QuarantineEvent", "VersionState",
    "ReviewFindings", "ShadowComparison",
    "Registry", "VersionEntry", "VersionSpec",
]

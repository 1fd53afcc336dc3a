"""reviewbus events: plain frozen pydantic v2 models, no I/O. Import only stdlib and pydantic.

One module per concept: base (Event, Model), change (what CI sends), inference (requests and
results), review (findings, shadow comparisons), versions (VersionSpec), lifecycle (states,
actions, LifecycleEvent), registry (the folded Registry and its blocklist), healing (failures,
quarantine, healing actions), feedback, dead_letter, training (learning-loop jobs). Every name
is re-exported here: `from schemas import X`.
"""

from .base import SCHEMA_VERSION, Event, Model, new_id, utcnow
from .change import AcceptedChange, ChangedFile, CIRun, CommitEvent, NormalizedChange, ReviewRequest
from .dead_letter import DeadLetter
from .feedback import Feedback
from .healing import FailureEvent, HealingAction, QuarantineEvent
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
from .lifecycle import LifecycleAction, LifecycleEvent, VersionState
from .registry import BlockEntry, Registry, VersionEntry
from .review import ReviewFindings, ShadowComparison
from .training import JobState, TrainingJobEvent
from .versions import VERSION_ID_PATTERN, VersionSpec

__all__ = [
    "CHANGE_TYPES",
    "SCHEMA_VERSION",
    "SEVERITY_ORDER",
    "VERSION_ID_PATTERN",
    "AcceptedChange",
    "BlockEntry",
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

"""The one small interface every model backend implements: `infer(batch) -> predictions`."""

from __future__ import annotations

import importlib
import threading
from typing import Protocol

from pydantic import Field

from schemas import ChangeType, Finding, Model, NormalizedChange, Risk, Usage, VersionSpec

from ..errors import ConfigError


class Prediction(Model):
    """One backend answer, in the output schema that all versions share."""

    change_type: ChangeType | None = None
    risk: Risk | None = None
    findings: list[Finding] = Field(default_factory=list)
    suggested_message: str | None = None
    usage: Usage = Field(default_factory=Usage)


class Backend(Protocol):
    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        """One prediction per change, in order. Raise BackendError (or any error) on failure."""
        ...

    async def close(self) -> None: ...


# backend name -> "module:factory"; modules are imported lazily so heavy ML deps load only
# in workers that serve such a version.
BACKENDS: dict[str, str] = {
    "analyzers": "agents.backends.analyzers:AnalyzerBackend",
    "fake": "agents.backends.fake:FakeBackend",
    "litellm": "agents.backends.litellm:LiteLLMBackend",
    "consensus": "agents.backends.consensus:ConsensusBackend",
    "transformers": "agents.backends.transformers:TransformersBackend",
    "learner": "agents.backends.learner:LearnerBackend",
}


# Workers build their versions' backends on threads. transformers' lazily loaded module is not
# safe to import from several threads at once ("cannot import name 'AutoModel'"), so builds,
# which hold those first imports and the model loads, run one at a time. Reentrant: a
# consensus backend builds its members inside its own build.
_BUILD_LOCK = threading.RLock()


def build_backend(spec: VersionSpec) -> Backend:
    with _BUILD_LOCK:
        return _build(spec)


def _build(spec: VersionSpec) -> Backend:
    target = BACKENDS.get(spec.backend)
    if target is None:
        raise ConfigError(f"version {spec.id}: unknown backend {spec.backend!r}; "
                          f"known: {', '.join(sorted(BACKENDS))}")
    module_name, factory_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    backend: Backend = factory(spec)
    return backend

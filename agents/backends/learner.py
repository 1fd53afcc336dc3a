"""The continuous learner as a backend (`backend: learner`): per-repository change-type models
refit on the repository's own labels, over a global base (agents/learning/learner.py).

```yaml
  - id: learner-v1
    backend: learner
    initial_state: shadow
    params:
      state_dir: /path/to/state   # default: $REVIEWBUS_HOME/learner/<version id>
      # takeover: 100             # labels from which a repository's own model answers
      # half: 200                 # blend: own weight n / (n + half), n = its labels
```

A change of a repository with at least `takeover` labels (and a fitted model) is answered by
blend(global, own, n, half); any other by the global base. The suggested subject is
`type(scope): summary`: type from the model, scope from the repository's history of changed
paths when the state has one (else from the paths alone), summary from the message without its
prefix. State files are re-read when they change (a refit renames a new file into place), so a
refit serves without a restart. scikit-learn and numpy only; no torch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from schemas import CHANGE_TYPES, ChangeType, NormalizedChange, VersionSpec

from ..changetype import risk_score
from ..errors import BackendError, ConfigError
from .base import Prediction

_KNOWN = {"state_dir", "takeover", "half"}


def parse_params(spec: VersionSpec) -> dict[str, Any]:
    p = dict(spec.params)
    unknown = sorted(set(p) - _KNOWN)
    if unknown:
        raise ConfigError(f"version {spec.id}: unknown learner params {unknown}; "
                          f"known: {sorted(_KNOWN)}")
    takeover = p.get("takeover")
    if takeover is not None and (not isinstance(takeover, int) or isinstance(takeover, bool)
                                 or takeover < 1):
        raise ConfigError(f"version {spec.id}: takeover must be a positive integer")
    half = p.get("half")
    if half is not None and (not isinstance(half, (int, float)) or half < 0):
        raise ConfigError(f"version {spec.id}: half must be a number >= 0")
    return {"state_dir": p.get("state_dir"), "takeover": takeover, "half": half}


class LearnerBackend:
    def __init__(self, spec: VersionSpec) -> None:
        from ..learning.learner_store import LearnerStore

        self.spec = spec
        self.params = parse_params(spec)
        directory = Path(self.params["state_dir"]).expanduser() if self.params["state_dir"] \
            else LearnerStore.default_dir(spec.id)
        self.store = LearnerStore(directory)
        if self.store.global_model() is None:
            raise ConfigError(f"version {spec.id}: no learner state in {directory} (fit one with "
                              f"python -m agents.learning.learner_store --data FILE --state DIR)")

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        if not batch:
            return []
        return await asyncio.to_thread(self.predict, batch)

    def predict(self, batch: list[NormalizedChange]) -> list[Prediction]:
        from ..learning import learner, subject
        from ..learning.learner_store import HALF, TAKEOVER, serving_counts

        try:
            manifest = self.store.manifest()
            base = self.store.global_model()
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read learner state: {exc}") from exc
        if base is None:
            raise BackendError(f"learner state {self.store.dir} has no global model")
        takeover = self.params["takeover"] or int(manifest.get("takeover", TAKEOVER))
        half = float(self.params["half"] if self.params["half"] is not None
                     else manifest.get("half", HALF))
        counts = serving_counts(batch, manifest)
        proba = base.predict_proba(counts)
        repos = manifest.get("repos", {})
        for repo in sorted({c.repo for c in batch}):
            entry = repos.get(repo) or {}
            n = int(entry.get("fitted_on") or 0)
            if n < takeover:
                continue
            own = self.store.repo_model(repo)
            if own is None:
                continue
            rows = [i for i, c in enumerate(batch) if c.repo == repo]
            proba[rows] = learner.blend(proba[rows], own.predict_proba(counts[rows]), n, half)
        out = []
        for i, change in enumerate(batch):
            out.append(self._prediction(change, proba[i], repos.get(change.repo) or {}, subject))
        return out

    def _prediction(self, change: NormalizedChange, p: Any, entry: dict[str, Any],
                    subject: Any) -> Prediction:
        from ..learning.learner import LABELS

        if not all(0.0 <= float(x) <= 1.0 for x in p):
            raise BackendError("learner produced scores outside [0, 1]")
        scores = {lbl: 0.0 for lbl in CHANGE_TYPES}
        for lbl, x in zip(LABELS, p):
            scores[lbl] = round(float(x), 6)
        label = max(CHANGE_TYPES, key=lambda lbl: (scores[lbl], -CHANGE_TYPES.index(lbl)))
        paths = [f.path for f in change.files]
        found, scope = subject.scope_from_history(paths, entry.get("scope_history") or [])
        if not found:
            scope = subject.scope_from_paths(paths)
        return Prediction(
            change_type=ChangeType(label=label, confidence=min(1.0, scores[label]), scores=scores),
            risk=risk_score(change, []),
            suggested_message=subject.subject(label, change, scope),
        )

    async def close(self) -> None:
        return None

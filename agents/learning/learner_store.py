"""The learner's state on disk, and fitting it from labelled examples.

Layout of a state directory (default `$REVIEWBUS_HOME/learner/<version id>`):

    state.json              params, takeover, half, and per repository: labels seen, the
                            labels its model was fitted on, its model file, its scope history
                            and, with `context_weight`, its label history (context.py)
    global.npz              the global base (all repositories' labels)
    repos/<owner>__<name>.npz  each repository's own model (its labels only)

`fit_state` is the pure part (examples -> models and a manifest); `LearnerStore` reads and
writes. A refit writes the new model file under a temporary name and renames it, so a reader
never sees half a file.

    python -m agents.learning.learner_store --data FILE.jsonl.gz --state DIR

fits a state from a dataset in the format of `../shared/datasets/` (what `reviewbus export`
writes): the global base on every row, each repository's own model on its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from schemas import NormalizedChange

from .data import Example, by_repo, date_key
from .features import featurize, with_context
from .learner import LearnerParams, LinearModel, fit, own_weights

# Measured with the prequential protocol on ../shared/datasets/ (docs/guides/learner.md):
# below this many labels a repository's own model is not used (the global base answers).
TAKEOVER = 100
HALF = 200.0
SCOPE_HISTORY = 400  # newest commits kept per repository for the learned scope


def repo_file(repo: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", repo) + ".npz"


def training_counts(examples: Sequence[Example], params: LearnerParams) -> Any:
    """The examples' feature counts as a fit reads them: with `context_weight`, each in the
    context of its repository's label history before it (context.training_contexts)."""
    counts = featurize([e.change for e in examples])
    if params.context_weight > 0:
        from .context import training_contexts

        counts = with_context(counts, training_contexts(examples))
    return counts


def serving_counts(changes: Sequence[NormalizedChange], manifest: dict[str, Any]) -> Any:
    """The changes' feature counts as the state answers them: with `context_weight`, each in
    the context of the label history its repository's entry saved (none: no context)."""
    counts = featurize(changes)
    if float((manifest.get("params") or {}).get("context_weight") or 0) > 0:
        from .context import serving_contexts

        repos = manifest.get("repos") or {}
        counts = with_context(counts, serving_contexts(
            changes, {r: (e or {}).get("history") or [] for r, e in repos.items()}))
    return counts


def fit_state(examples: Sequence[Example], params: LearnerParams | None = None,
              takeover: int = TAKEOVER, half: float = HALF,
              scopes: dict[str, str | None] | None = None
              ) -> tuple[dict[str, Any], LinearModel, dict[str, LinearModel]]:
    """(manifest, global model, {repo: own model}) from labelled examples. `scopes`: example
    id -> the scope of its original subject, for the learned scope (optional)."""
    params = params or LearnerParams()
    examples = sorted(examples, key=lambda e: (date_key(e.author_date), e.id))
    counts = training_counts(examples, params)
    index = {e.id: i for i, e in enumerate(examples)}
    base = fit(counts, [e.label for e in examples], params)
    own: dict[str, LinearModel] = {}
    repos: dict[str, Any] = {}
    for repo, rows in sorted(by_repo(examples).items()):
        idx = [index[e.id] for e in rows]
        entry: dict[str, Any] = {"labels": len(rows), "fitted_on": 0, "file": None}
        if len(rows) >= takeover:
            own[repo] = fit(counts[idx], [e.label for e in rows], params,
                            sample_weight=own_weights(len(rows), params))
            entry.update(fitted_on=len(rows), file=repo_file(repo))
        if params.context_weight > 0:
            from .context import history

            entry["history"] = history(rows)
        if scopes is not None:
            entry["scope_history"] = [[[f.path for f in e.change.files], scopes.get(e.id)]
                                      for e in rows[-SCOPE_HISTORY:]]
        repos[repo] = entry
    manifest = {"params": asdict(params), "takeover": takeover, "half": half,
                "global_rows": len(examples), "repos": repos}
    return manifest, base, own


class LearnerStore:
    """Reads and writes a state directory; models are cached by file modification time."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory).expanduser()
        self._cache: dict[Path, tuple[float, LinearModel]] = {}
        self._manifest: tuple[float, dict[str, Any]] | None = None

    @staticmethod
    def default_dir(version_id: str) -> Path:
        home = Path(os.environ.get("REVIEWBUS_HOME") or ".reviewbus")
        return home / "learner" / version_id

    def manifest(self) -> dict[str, Any]:
        """state.json, re-read only when it changed ({} when there is none)."""
        path = self.dir / "state.json"
        try:
            mtime = path.stat().st_mtime
            if self._manifest is not None and self._manifest[0] == mtime:
                return self._manifest[1]
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        self._manifest = (mtime, data)
        return data

    def _load(self, path: Path) -> LinearModel | None:
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        hit = self._cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
        model = LinearModel.from_bytes(path.read_bytes())
        self._cache[path] = (mtime, model)
        return model

    def global_model(self) -> LinearModel | None:
        return self._load(self.dir / "global.npz")

    def repo_model(self, repo: str) -> LinearModel | None:
        return self._load(self.dir / "repos" / repo_file(repo))

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def save(self, manifest: dict[str, Any], base: LinearModel | None,
             own: dict[str, LinearModel]) -> None:
        if base is not None:
            self._write(self.dir / "global.npz", base.to_bytes())
        for repo, model in own.items():
            self._write(self.dir / "repos" / repo_file(repo), model.to_bytes())
        self._write(self.dir / "state.json",
                    json.dumps(manifest, indent=1, sort_keys=True).encode())

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agents.learning.learner_store")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--params", default="{}", help="LearnerParams as JSON")
    p.add_argument("--takeover", type=int, default=TAKEOVER)
    args = p.parse_args(argv)
    from .data import load_examples, read_rows

    t0 = time.perf_counter()
    examples = load_examples(args.data)
    scopes = {str(r.get("id")): r.get("scope") for _n, r in read_rows(args.data) if r.get("id")}
    manifest, base, own = fit_state(examples, LearnerParams.from_dict(json.loads(args.params)),
                                    args.takeover, scopes=scopes)
    store = LearnerStore(args.state)
    store.save(manifest, base, own)
    print(f"{len(examples)} rows, {len(own)} repository models, {store.size_bytes()} bytes in "
          f"{args.state}, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

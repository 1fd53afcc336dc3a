"""Labelled change-type examples: the JSONL format of `../shared/datasets/` and of `export`.

One JSON object per line with at least `message`, `diff`, `files` ([{path, added, deleted}])
and `label`; optional `id`, `repo`, `sha`, `author_date`, `subject` (the original first line)
and `split`. Files may be gzip-compressed (`.gz`). Every row goes through intake's own
`accept_input`, so an example is masked exactly as live traffic is.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import CHANGE_TYPES, ChangedFile, CommitEvent, NormalizedChange

from ..errors import ConfigError, InvalidEvent
from ..intake import accept_input
from ..settings import Limits

_NEW_FILE = re.compile(r"^diff --git a/.+? b/(.+)\n(?:(?:old|new) mode .*\n)?new file mode", re.MULTILINE)
_DELETED_FILE = re.compile(r"^diff --git a/(.+?) b/.+\ndeleted file mode", re.MULTILINE)
_RENAMED = re.compile(r"^rename to (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    id: str
    repo: str
    author_date: str  # ISO 8601, "" when unknown
    label: str
    change: NormalizedChange
    split: str | None = None  # train | val | test, when the file says


def _file_statuses(diff: str) -> dict[str, str]:
    out = {p: "added" for p in _NEW_FILE.findall(diff)}
    out.update({p: "deleted" for p in _DELETED_FILE.findall(diff)})
    out.update({p: "renamed" for p in _RENAMED.findall(diff)})
    return out


def commit_event(row: dict[str, Any]) -> CommitEvent:
    """The CommitEvent CI would have sent for this row (full message, files with status)."""
    message = str(row.get("message") or "")
    subject = row.get("subject")
    if subject:  # the dataset's message lost the prefix; put the original subject back
        _first, sep, rest = message.partition("\n")
        message = str(subject) + (sep + rest if sep else "")
    diff = str(row.get("diff") or "")
    statuses = _file_statuses(diff)
    files = []
    for f in row.get("files") or []:
        if isinstance(f, str):
            f = {"path": f}
        path = str(f.get("path") or "")
        if not path:
            continue
        files.append(ChangedFile(path=path[:1024], status=f.get("status") or statuses.get(path, "modified"),
                                 added=f.get("added"), deleted=f.get("deleted")))
    sha = str(row.get("sha") or "")
    if not re.fullmatch(r"[0-9a-fA-F]{4,64}", sha):
        sha = hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
    return CommitEvent(
        event_id=str(row.get("id") or f"{row.get('repo', 'local')}@{sha}")[:128],
        repo=str(row.get("repo") or "local"), sha=sha, authored_at=_parse_date(row.get("author_date")),
        message=message[:200_000], diff=diff,
        diff_truncated=bool(row.get("diff_truncated", False)), files=files,
    )


def example_from_row(row: dict[str, Any], limits: Limits | None = None) -> Example:
    """Raises ConfigError for a row without a known label, InvalidEvent for one that intake
    would refuse."""
    label = row.get("label")
    if label not in CHANGE_TYPES:
        where = f"row {row['id']}: " if row.get("id") else ""
        raise ConfigError(f"{where}label {label!r} is not one of {', '.join(CHANGE_TYPES)}")
    event = commit_event(row)
    accepted = accept_input(event.model_dump_json().encode(), source_topic="dataset",
                            kind="commit", task="code-review", limits=limits or Limits())
    return Example(id=event.event_id, repo=event.repo, author_date=str(row.get("author_date") or ""),
                   label=str(label), change=accepted.change, split=row.get("split"))


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-empty line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{path}:{n}: not a JSON object: {exc}") from exc
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{n}: not a JSON object")
                yield n, row
    except OSError as exc:
        raise ConfigError(f"cannot read dataset {path}: {exc.strerror or exc}") from exc


def load_examples(path: Path, repos: Iterable[str] | None = None, limit: int | None = None
                  ) -> list[Example]:
    """Every labelled row of a JSONL(.gz) file, optionally only some repositories."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    wanted = set(repos) if repos else None
    out: list[Example] = []
    for n, row in read_rows(path):
        if wanted is not None and row.get("repo") not in wanted:
            continue
        try:
            out.append(example_from_row(row))
        except (ConfigError, InvalidEvent) as exc:  # intake's refusal, as on the bus
            raise ConfigError(f"{path}:{n}: {exc}") from exc
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ConfigError(f"dataset {path} has no labelled rows"
                          + (f" for repositories {sorted(wanted)}" if wanted else ""))
    return out


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")
            n += 1
    return n


# ---------------------------------------------------------------- splits


def by_repo(examples: Iterable[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for ex in examples:
        out.setdefault(ex.repo, []).append(ex)
    return out


def temporal_split(examples: list[Example], train_fraction: float = 0.7
                   ) -> tuple[list[Example], list[Example]]:
    """Oldest `train_fraction` (by author date, ties by id) -> train, the newer rest -> test."""
    if not 0 < train_fraction < 1:
        raise ConfigError(f"train fraction must be in (0, 1), got {train_fraction}")
    ordered = sorted(examples, key=lambda e: (date_key(e.author_date), e.id))
    cut = max(1, min(len(ordered) - 1, round(len(ordered) * train_fraction)))
    return ordered[:cut], ordered[cut:]


def authored_before(examples: Iterable[Example], first: Example) -> list[Example]:
    """The rows authored strictly before `first` (author dates compared in UTC)."""
    cut = date_key(first.author_date)
    return [e for e in examples if date_key(e.author_date) < cut]


def _parse_date(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def date_key(value: str) -> str:
    """Author dates carry offsets; compare them in UTC."""
    try:
        return datetime.fromisoformat(value).astimezone(UTC).isoformat()
    except ValueError:
        return value


def validation_split(examples: list[Example], fraction: float = 0.15, seed: int = 13,
                     temporal: bool = False) -> tuple[list[Example], list[Example]]:
    """(train, val). Rows with `split` set keep it; otherwise per repository either the newest
    `fraction` (temporal, the honest choice for a model that will see newer commits) or a
    seeded stratified random `fraction`."""
    marked_val = [e for e in examples if e.split == "val"]
    marked_train = [e for e in examples if e.split == "train"]
    if marked_val and marked_train:
        return marked_train, marked_val
    train: list[Example] = []
    val: list[Example] = []
    for _repo, rows in sorted(by_repo(examples).items()):
        if temporal:
            head, tail = temporal_split(rows, 1 - fraction) if len(rows) > 1 else (rows, [])
            train += head
            val += tail
            continue
        rng = random.Random(seed)
        for _label, group in sorted(_by_label(rows).items()):
            group = sorted(group, key=lambda e: e.id)
            rng.shuffle(group)
            k = int(round(len(group) * fraction))
            if k == 0 and fraction > 0 and len(group) >= 3:
                k = 1  # every label of some size is validated
            val += group[:k]
            train += group[k:]
    return train, val


def _by_label(rows: list[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for ex in rows:
        out.setdefault(ex.label, []).append(ex)
    return out


def repo_split(repos: list[str], val_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    """Train and validation repositories for an export (split by repository: no leak of one
    project's conventions between train and val). Deterministic: by hash of the name."""
    ordered = sorted(repos, key=lambda r: hashlib.sha256(r.encode()).hexdigest())
    k = max(1, round(len(ordered) * val_fraction)) if len(ordered) > 1 else 0
    return ordered[k:], ordered[:k]

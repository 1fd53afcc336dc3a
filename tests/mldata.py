"""Tiny synthetic change-type rows (the datasets' JSONL format) for fast ML tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

KINDS = {
    "docs": ("docs", "document the {w} option in the guide", "docs/{w}.md", "+Use `{w}` to set it."),
    "test": ("test", "cover {w} with unit tests", "tests/test_{w}.py",
             "+def test_{w}():\n+    assert {w}() == 1"),
    "bug_fix": ("fix", "handle empty {w} without crashing", "src/{w}.py",
                "-    return items[0]\n+    return items[0] if items else None"),
    "feature": ("feat", "add a {w} command", "src/cli_{w}.py",
                "+def {w}_command(args):\n+    return run({w}(args))"),
    "build_ci": ("ci", "run {w} in the workflow", ".github/workflows/{w}.yml",
                 "+      - run: make {w}"),
}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima"]


def rows(n_per_label: int = 6, repos: tuple[str, ...] = ("org/one", "org/two")) -> list[dict]:
    out = []
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    i = 0
    for k in range(n_per_label):
        for label, (ctype, subject, path, body) in KINDS.items():
            w = WORDS[k % len(WORDS)]
            repo = repos[i % len(repos)]
            p = path.format(w=w)
            diff = (f"diff --git a/{p} b/{p}\n--- a/{p}\n+++ b/{p}\n@@ -1,1 +1,2 @@\n"
                    + body.format(w=w) + "\n")
            out.append({
                "id": f"{repo}@{i:040x}", "repo": repo, "sha": f"{i:040x}",
                "author_date": (t0 + timedelta(days=i)).isoformat(),
                "subject": f"{ctype}: {subject.format(w=w)}",
                "message": f"{subject.format(w=w)}\n\n* {ctype}: squashed line",
                "files": [{"path": p, "added": body.count("+"), "deleted": body.count("\n-")}],
                "diff": diff, "label": label,
            })
            i += 1
    return out

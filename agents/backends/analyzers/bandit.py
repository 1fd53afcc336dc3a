"""bandit: our own config and ini file, `--ignore-nosec`, run in a warm process; its JSON report
as Raw findings."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from ...errors import BackendError
from .raw import Raw, parse_json, tool_error
from .warm_pool import WarmPool

_LEVEL = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
_CONFIDENCE = {"HIGH": 0.9, "MEDIUM": 0.6, "LOW": 0.3}


async def run_bandit(pool: WarmPool, targets: list[str], src: Path, home: Path,
                     to_rel: dict[str, str], *, timeout_s: float) -> list[Raw]:
    # Our config and an explicit (empty) ini: bandit then never looks for a .bandit file.
    config, ini = home / "bandit.yaml", home / "bandit.ini"
    config.write_text("exclude_dirs: []\n")
    ini.write_text("[bandit]\n")
    argv = ["-f", "json", "-q", "--exit-zero", "--ignore-nosec", "-c", str(config),
            "--ini", str(ini), *targets]
    run = await asyncio.to_thread(pool.run, argv, src, home, timeout_s)
    if run.returncode != 0:
        raise tool_error("bandit", run)
    report = parse_json("bandit", run)
    if not isinstance(report, dict):
        raise BackendError("bandit: unexpected JSON output (not an object)")
    return bandit_findings(report, to_rel)


def bandit_findings(report: dict[str, Any], to_rel: dict[str, str]) -> list[Raw]:
    out: list[Raw] = []
    for item in report.get("results") or []:
        rel = to_rel.get(os.path.normpath(str(item.get("filename", ""))))
        if rel is None:
            continue
        line = int(item.get("line_number") or 0)
        span = [int(x) for x in item.get("line_range") or [line]]
        out.append(Raw("bandit", str(item.get("test_id", "B000")), rel, line,
                       max([line, *span]), str(item.get("issue_text", "")),
                       _LEVEL.get(item.get("issue_severity", ""), "info"),
                       _CONFIDENCE.get(item.get("issue_confidence", ""), 0.3),
                       "security", f"See {item['more_info']}" if item.get("more_info") else None))
    return out

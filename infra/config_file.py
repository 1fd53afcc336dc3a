"""Reading the versions file (the I/O half of agents/config.py, which parses and validates)."""

from __future__ import annotations

from pathlib import Path

from agents.config import DEFAULT_CONFIG, ReviewbusConfig, parse_config
from agents.errors import ConfigError


def load_config(path: Path | None = None) -> ReviewbusConfig:
    """The versions file at `path` (the packaged default when None), validated."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read versions file {path}: {exc.strerror}") from exc
    return parse_config(text, str(path))


__all__ = ["load_config"]

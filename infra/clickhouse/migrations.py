"""Numbered SQL migrations, applied once each and recorded in `schema_migrations`.

The files live in infra/migrations/ (`NNN_name.sql`, shipped as package data); a statement
ends with ';' at the end of a line.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from agents.errors import StoreError

from .sqlguard import split_statements

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("infra.store")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_-]+)\.sql$")

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    """(version, path) of every migration file, in order; StoreError on a bad name or a
    number used twice."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise StoreError(f"migration file {path.name} is not named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"two migrations numbered {version}: "
                             f"{found[version].name} and {path.name}")
        found[version] = path
    return sorted(found.items())


_migration_files = migration_files  # the old private name


def migrate(store: Store, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the numbered SQL files not applied yet, in order; return their names."""
    store.command(SCHEMA_MIGRATIONS_DDL)
    applied = {row[0] for row in store.query("SELECT version FROM schema_migrations FINAL").rows}
    done: list[str] = []
    for version, path in migration_files(directory):
        if version in applied:
            continue
        for statement in split_statements(path.read_text(encoding="utf-8")):
            store.command(statement)
        store.insert_rows("schema_migrations", [[version, path.stem]], ["version", "name"],
                          what=f"cannot record migration {path.name}")
        log.info("applied migration %s", path.name)
        done.append(path.stem)
    return done

"""Faust tables, co-partitioned with their source topics."""

from __future__ import annotations

from .app import app, settings

# request_id -> {version_id: InferenceResult JSON, "_ts": first-seen time}. Keyed like
# `results` (by request_id) so each worker joins the partitions it owns.
# value_type None (JSON through the app default, autodetected): `dict` is no Faust model, and
# recovering the changelog after a restart failed on it (dict.from_data) and never finished.
shadow_join = app.Table("shadow-join", default=dict, partitions=settings.partitions,
                        key_type=str, value_type=None)

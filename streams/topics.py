"""Every topic of the app, declared with explicit partitions; values are raw JSON bytes."""

from __future__ import annotations

from collections.abc import Iterable

import faust
from faust import TopicT

from agents.settings import Settings
from schemas import VersionSpec

from . import names


class Topics:
    """The app's topics, declared on `app` for these settings and served versions."""

    def __init__(self, app: faust.App, settings: Settings, specs: Iterable[VersionSpec]) -> None:
        self._app, self._settings = app, settings
        self.accepted = self.declare(self.name("accepted"))
        self.results = self.declare(self.name("results"))
        self.shadow_comparisons = self.declare(self.name("shadow-comparisons"))
        self.failures = self.declare(self.name("failures"))
        self.healing = self.declare(self.name("healing"))
        self.feedback = self.declare(self.name("feedback"))
        self.lifecycle = self.declare(self.name("lifecycle"), partitions=1)
        self.findings = self.declare(self.name("findings"))
        self.dlq = self.declare(self.name("dlq"))
        # One topic per version served at start: the versions file's and those registered by then.
        self.inference: dict[str, TopicT] = {
            v.id: self.declare(names.inference_topic(settings, v.id)) for v in specs}
        # One shared topic for the versions registered after the start (streams/flows/router.py).
        self.pool = self.declare(names.pool_topic(settings))
        self.input_kind_by_topic = {self.name(short): kind
                                    for short, kind in names.INPUT_KINDS.items()}

    def name(self, short: str) -> str:
        return names.topic(self._settings, short)

    def declare(self, *topic_names: str, partitions: int | None = None) -> TopicT:
        return self._app.topic(*topic_names, key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw",
                               partitions=partitions or self._settings.partitions,
                               internal=False)

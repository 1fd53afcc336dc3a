"""Every topic of the app, declared with explicit partitions; values are raw JSON bytes."""

from __future__ import annotations

from faust import TopicT

from . import names
from .app import app, config, settings
from .registered import serving_specs


def _topic(*topic_names: str, partitions: int | None = None) -> TopicT:
    return app.topic(*topic_names, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw",
                     partitions=partitions or settings.partitions, internal=False)


def name(short: str) -> str:
    return names.topic(settings, short)


inputs = _topic(*(name(n) for n in names.INPUT_KINDS))
accepted = _topic(name("accepted"))
results = _topic(name("results"))
shadow_comparisons = _topic(name("shadow-comparisons"))
failures = _topic(name("failures"))
healing = _topic(name("healing"))
feedback = _topic(name("feedback"))
lifecycle = _topic(name("lifecycle"), partitions=1)
findings = _topic(name("findings"))
dlq = _topic(name("dlq"))

inference = {v.id: _topic(names.inference_topic(settings, v.id)) for v in serving_specs(config)}

INPUT_KIND_BY_TOPIC = {name(short): kind for short, kind in names.INPUT_KINDS.items()}

"""Topic names and partition counts: the one place that knows them (no Faust import)."""

from __future__ import annotations

from agents.settings import Settings

INPUT_KINDS = {"commits": "commit", "review-requests": "review_request"}
INTERNAL = ("accepted", "results", "shadow-comparisons", "failures", "healing", "feedback")
SINGLE_PARTITION = ("lifecycle",)  # one total order of lifecycle events per cluster
OUTPUT = ("findings", "dlq")


def topic(settings: Settings, name: str) -> str:
    return f"{settings.topic_prefix}{name}"


# The inference topic shared by the versions registered since the workers started (a version
# id starts with a letter or a digit, so no version's own topic can be this one).
POOL = "_pool"


def inference_topic(settings: Settings, version_id: str) -> str:
    return f"{settings.topic_prefix}inference.{version_id}"


def pool_topic(settings: Settings) -> str:
    """`inference._pool`: versions registered while the workers run are served through it
    until the next start gives them their own (streams/flows/inference.py)."""
    return inference_topic(settings, POOL)


def sink_group(settings: Settings) -> str:
    """The sink's own consumer group (streams/flows/sink.py): it reads every internal topic
    with a plain aiokafka consumer, beside the Faust app's group."""
    return f"{settings.resolved_app_id()}-sink"


def intake_group(settings: Settings) -> str:
    """Intake's own consumer group (streams/flows/intake.py): it reads the input topics with a
    plain aiokafka consumer on the main loop, beside the Faust app's group."""
    return f"{settings.resolved_app_id()}-intake"


def hops_group(settings: Settings) -> str:
    """The group of the inference and results hops (streams/topic_streams.py)."""
    return f"{settings.resolved_app_id()}-hops"


def input_topics(settings: Settings) -> list[str]:
    """What intake reads: the input topics CI publishes to."""
    return [topic(settings, n) for n in INPUT_KINDS]


def sink_topics(settings: Settings) -> list[str]:
    """What the sink stores: every internal topic, lifecycle and the dead letters."""
    return [topic(settings, n) for n in (*INTERNAL, *SINGLE_PARTITION, "dlq")]


def all_topics(settings: Settings, version_ids: list[str]) -> dict[str, int]:
    """Every topic reviewbus uses, with its explicit partition count."""
    p = settings.partitions
    out = {topic(settings, n): p for n in (*INPUT_KINDS, *INTERNAL, *OUTPUT)}
    out.update({topic(settings, n): 1 for n in SINGLE_PARTITION})
    out.update({inference_topic(settings, v): p for v in (*version_ids, POOL)})
    return out

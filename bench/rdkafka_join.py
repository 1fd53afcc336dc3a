"""`python -m bench rdkafka-join [--runs 5]`: a new consumer group's wait for its first message.

One embedded Tansu broker (infra/broker.py, as `reviewbus up` starts it) and one topic holding
a few messages. Each run, every variant below is a consumer in a new group (auto offset reset
earliest), timed from its creation to its first message:

    aiokafka           aiokafka's defaults (session.timeout 10 s), the baseline
    rdkafka-default    confluent-kafka (librdkafka) defaults: subscribe(), session.timeout 45 s
    rdkafka-static     defaults + group.instance.id (static membership): no help, 3 s worse
    rdkafka-session6s  subscribe() with session.timeout.ms=6000, heartbeat.interval.ms=2000
    rdkafka-session2s  the same with 2000 / 500: Tansu only (Apache Kafka's broker refuses a
                       session timeout under group.min.session.timeout.ms, 6 s by default)
    rdkafka-assign     assign() of every partition at OFFSET_STORED: no group join at all

Why: Tansu holds a JoinGroup (one that is not the KIP-394 "member id required" round) for
half the group's session timeout, polling once a second, so that other members can join
(tansu-broker src/coordinator/group/administrator.rs, `join`: `elapsed_ms <
session_timeout_ms.div(2)` -> sleep 1 s). librdkafka's default session timeout is 45 s, hence
~23 s; aiokafka's is 10 s, hence ~5 s. The JoinGroup round trips librdkafka reports
(debug=protocol) are recorded per run as evidence.

confluent-kafka is not a reviewbus dependency: without it the script says how to install it
and exits 0. Writes bench/results/rdkafka_join-<UTC time>.json and prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from .core import RESULTS_DIR, machine_info, median, table, trials_summary

TOPIC = "rdkafka-join"
PARTITIONS = 2
MESSAGES = 10

# The settings of each confluent-kafka variant, on top of bootstrap.servers, group.id and
# auto.offset.reset=earliest. "assign" is not a setting: that variant calls assign() instead of
# subscribe().
VARIANTS: dict[str, dict] = {
    "aiokafka": {},
    "rdkafka-default": {},
    "rdkafka-static": {"group.instance.id": "<new per run>"},
    "rdkafka-session6s": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 2000},
    "rdkafka-session2s": {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500},
    "rdkafka-assign": {"assign": "every partition at OFFSET_STORED, no subscribe()"},
}

JOIN_RTT = re.compile(r"Received JoinGroupResponse \([^)]*rtt ([0-9.]+)ms\)")

INSTALL_HINT = ("confluent-kafka is not installed; it is not a reviewbus dependency. "
                "Install it to run this benchmark:\n    pip install confluent-kafka")


class _JoinLog(logging.Handler):
    """Collects the round trip of every JoinGroup librdkafka reports (debug=protocol)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rtts_ms: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = JOIN_RTT.search(record.getMessage())
        if m:
            self.rtts_ms.append(round(float(m.group(1)), 1))


async def _setup(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(MESSAGES):
            await producer.send_and_wait(TOPIC, f"m{i}".encode(), partition=i % PARTITIONS)
    finally:
        await producer.stop()


async def _aiokafka_first(bootstrap: str, timeout_s: float) -> float | None:
    from aiokafka import AIOKafkaConsumer

    t0 = time.monotonic()
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap,
                                group_id=f"aio-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.getone(), timeout_s)
        return time.monotonic() - t0
    except TimeoutError:
        return None
    finally:
        await consumer.stop()


def _rdkafka_first(bootstrap: str, variant: str, timeout_s: float) -> tuple[float | None, list]:
    from confluent_kafka import OFFSET_STORED, Consumer, TopicPartition

    handler = _JoinLog()
    logger = logging.getLogger(f"bench.rdkafka_join.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    conf = {"bootstrap.servers": bootstrap, "group.id": f"rdk-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "debug": "protocol", "logger": logger}
    if variant == "rdkafka-static":
        conf["group.instance.id"] = f"static-{uuid.uuid4().hex[:8]}"
    elif variant in ("rdkafka-session6s", "rdkafka-session2s"):
        conf.update(VARIANTS[variant])
    t0 = time.monotonic()
    consumer = Consumer(conf)
    elapsed = None
    try:
        if variant == "rdkafka-assign":
            partitions = consumer.list_topics(TOPIC, timeout=timeout_s).topics[TOPIC].partitions
            consumer.assign([TopicPartition(TOPIC, p, OFFSET_STORED) for p in sorted(partitions)])
        else:
            consumer.subscribe([TOPIC])
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                elapsed = time.monotonic() - t0
                break
    finally:
        consumer.close()
        logger.removeHandler(handler)
    return elapsed, handler.rtts_ms


def _tansu_version() -> str | None:
    from agents.errors import BrokerUnavailable
    from infra.broker import tansu_binary

    try:
        binary = tansu_binary()
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return f"{out.stdout.strip()} ({Path(binary).name})"
    except (BrokerUnavailable, OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench rdkafka-join", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of every variant; medians reported")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--timeout", type=float, default=90.0, help="give up on one run after this")
    ap.add_argument("--label", default=None, help="suffix of the JSON file name")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    try:
        import confluent_kafka
    except ImportError:
        print(INSTALL_HINT)
        return 0
    import aiokafka

    from .stack import Broker

    home = Path(tempfile.mkdtemp(prefix="reviewbus-rdkafka-join-"))
    broker = Broker(home / "broker")
    print(f"broker at {broker.address}; {args.runs} run(s) of {', '.join(variants)}",
          file=sys.stderr, flush=True)
    out: dict = {
        "bench": "rdkafka_join", "started": datetime.now(UTC).isoformat(),
        "machine": machine_info(), "tansu": _tansu_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0], "aiokafka": aiokafka.__version__,
        "runs": args.runs, "topic": {"partitions": PARTITIONS, "messages": MESSAGES},
        "variants": {v: {"settings": VARIANTS[v], "seconds": [], "join_rtts_ms": []}
                     for v in variants},
    }
    try:
        asyncio.run(_setup(broker.address))
        for run in range(args.runs):
            for v in variants:  # interleaved, so that drift in the machine's load hits all alike
                if v == "aiokafka":
                    s, rtts = asyncio.run(_aiokafka_first(broker.address, args.timeout)), None
                else:
                    s, rtts = _rdkafka_first(broker.address, v, args.timeout)
                out["variants"][v]["seconds"].append(None if s is None else round(s, 3))
                if rtts is not None:
                    out["variants"][v]["join_rtts_ms"].append(rtts)
                print(f"run {run + 1}/{args.runs} {v:<18} "
                      f"{'timeout' if s is None else f'{s:.2f} s'}"
                      f"{f'  JoinGroup rtts {rtts} ms' if rtts else ''}",
                      file=sys.stderr, flush=True)
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)
    for d in out["variants"].values():
        d["summary"] = trials_summary(d["seconds"])
        held = [max(rtts) for rtts in d["join_rtts_ms"] if rtts]
        d["longest_join_ms_median"] = median(held)
    base = out["variants"].get("aiokafka", {}).get("summary", {}).get("median")
    default = out["variants"].get("rdkafka-default", {}).get("summary", {}).get("median")
    rows = []
    for v, d in out["variants"].items():
        med = d["summary"]["median"]
        d["ratio_to_aiokafka"] = round(med / base, 3) if med and base else None
        d["ratio_to_rdkafka_default"] = round(med / default, 4) if med and default else None
        rows.append([v, med, d["summary"]["min"], d["summary"]["max"], d["ratio_to_aiokafka"],
                     d["ratio_to_rdkafka_default"], d["longest_join_ms_median"]])
    print("\nseconds from a new consumer to its first message "
          f"({args.runs} runs; Tansu {out['tansu']}, librdkafka {out['librdkafka']})")
    print(table(rows, ["variant", "median s", "min", "max", "/ aiokafka", "/ rdkafka default",
                       "longest JoinGroup ms"]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"rdkafka_join-{stamp}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ceilings benchmarks 1 and 2 measure the bus against, on the same broker: a raw aiokafka
relay (one consume-and-produce hop, in this process) and the raw pipeline (the bus's hops in
raw aiokafka, `python -m bench.rawpipe` in a process of its own)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agents.settings import Settings
from infra.kafka import ensure_topics

from . import load
from .core import ROOT, STABLE, latency_summary, span_rate

# ---- the raw relay ---------------------------------------------------------------------------


class Relay:
    def __init__(self, broker: str, partitions: int) -> None:
        self.settings = Settings(kafka=broker, partitions=partitions)
        self.broker = broker
        self.partitions = partitions

    async def topics(self) -> tuple[str, str]:
        base = f"relay{uuid.uuid4().hex[:8]}"
        src, dst = f"{base}.in", f"{base}.out"
        await ensure_topics(self.settings, self.broker, {src: self.partitions,
                                                         dst: self.partitions})
        return src, dst

    def start(self, src: str, dst: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.relay", self.broker, src, dst, f"g-{src}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            proc.kill()
            raise RuntimeError("relay did not start")
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

    async def throughput(self, n: int, log) -> dict:
        """Pre-load the input topic, then let a fresh relay drain it."""
        src, dst = await self.topics()
        run = f"rtp{uuid.uuid4().hex[:6]}"
        messages = load.commit_events(n, run)
        await load.produce(self.settings, self.broker, src, messages)
        started = time.monotonic()
        proc = await asyncio.to_thread(self.start, src, dst)
        try:
            consumer = await load.start_tail_consumer(self.settings, self.broker, dst,
                                                      from_beginning=True)
            try:
                await load.wait_for_count(consumer, {e for e, _, _ in messages},
                                          load.event_id_of, timeout=300)
            finally:
                await consumer.stop()
        finally:
            self.stop(proc)
        out = await load.timestamps(self.settings, self.broker, dst, load.event_id_of)
        rate = span_rate(out)
        log(f"  relay {n} events: {rate or 0:,.0f} events/s "
            f"({time.monotonic() - started:.1f} s with start)")
        return {"events": n, "events_per_s": rate}

    async def latency(self, rate: float, seconds: float, log) -> dict:
        src, dst = await self.topics()
        proc = await asyncio.to_thread(self.start, src, dst)
        try:
            run = f"rlat{uuid.uuid4().hex[:6]}"
            n = max(200, int(rate * seconds))
            messages = load.commit_events(n, run)
            wall = await load.run_load(self.settings, self.broker, src, dst, messages,
                                       load.event_id_of, rate=rate)
        finally:
            self.stop(proc)
        ins = await load.timestamps(self.settings, self.broker, src, load.event_id_of)
        outs = await load.timestamps(self.settings, self.broker, dst, load.event_id_of)
        hop = latency_summary(load.hop_latencies(ins, outs))
        log(f"  relay paced {rate:,.0f}/s x {n}: p50 {hop['p50_ms']} p99 {hop['p99_ms']} ms")
        return {"rate": rate, "events": n, "achieved_per_s": wall["events_per_s"], "hop": hop}


# ---- the raw pipeline: the same hops and batching in aiokafka (bench/rawpipe.py) -----------


class RawPipeline:
    """The second ceiling: the worker's hops as raw aiokafka consumers. `with_readers`: the
    results hop and the sink (into chDB under `store_home`) too, as the worker has them (the
    same hops); without, intake and inference only (the figure of earlier runs)."""

    HOPS = ("commits", "accepted", f"inference.{STABLE}", "results", "findings")

    def __init__(self, broker: str, partitions: int, batch: int, within_ms: int,
                 store_home: Path | None = None) -> None:
        self.settings = Settings(kafka=broker, partitions=partitions)
        self.broker, self.partitions = broker, partitions
        self.batch, self.within_ms = batch, within_ms
        self.store_home = store_home

    async def throughput(self, n: int, log) -> dict:
        prefix = f"raw{uuid.uuid4().hex[:8]}."
        await ensure_topics(self.settings, self.broker,
                            {prefix + t: self.partitions for t in self.HOPS})
        proc = await asyncio.to_thread(self._start, prefix)
        try:
            run = f"rp{uuid.uuid4().hex[:6]}"
            messages = load.commit_events(n, run)
            wall = await load.run_load(self.settings, self.broker, prefix + "commits",
                                       prefix + "findings", messages, load.request_id_of,
                                       timeout=300.0)
        finally:
            self.finish(proc)
        out = await load.timestamps(self.settings, self.broker, prefix + "findings",
                                    load.request_id_of, prefix=run)
        rate = span_rate(out)
        hops = "4 hops (with the results hop and the sink)" if self.store_home else "2 hops"
        log(f"  raw pipeline, {hops}, {n} events: {rate or 0:,.0f} events/s "
            f"(wall {wall['events_per_s']:,.0f}/s)")
        return {"events": n, "events_per_s": rate, "events_per_s_wall": wall["events_per_s"]}

    def _start(self, prefix: str) -> subprocess.Popen:
        store = []
        if self.store_home is not None:
            self.store_home.mkdir(parents=True, exist_ok=True)
            store = [str(self.store_home / prefix.rstrip("."))]
        errors = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.rawpipe", self.broker, prefix, f"g-{prefix}",
             str(self.batch), str(self.within_ms), *store],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
        proc.errors = errors  # type: ignore[attr-defined]
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            self.finish(proc)
            raise RuntimeError("raw pipeline did not start")
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen) -> None:
        """Stop it; a hop that failed meanwhile (exit status 1) raises with its error: a
        ceiling that lost a hop is not a ceiling."""
        Relay.stop(proc)
        errors = proc.errors  # type: ignore[attr-defined]
        errors.seek(0)
        tail = errors.read()[-2000:]
        errors.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            raise RuntimeError(f"raw pipeline exited {proc.returncode}: {tail}")

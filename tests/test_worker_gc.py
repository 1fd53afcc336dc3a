"""streams/worker.py tune_gc: a worker collects Python's youngest generation every
`gc_young_threshold` allocations (REVIEWBUS_GC_YOUNG_THRESHOLD), not every 700."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

from streams.worker import tune_gc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import gc, json; from agents.settings import load_settings; "
         "from streams.worker import configure_process; "
         "before = gc.get_threshold(); configure_process(load_settings()); "
         "print(json.dumps([before, gc.get_threshold()]))")


def _worker_thresholds(value: str | None) -> tuple[list[int], list[int]]:
    """The thresholds a fresh process has before and after the worker's process setup."""
    env = {k: v for k, v in os.environ.items() if k != "REVIEWBUS_GC_YOUNG_THRESHOLD"}
    if value is not None:
        env["REVIEWBUS_GC_YOUNG_THRESHOLD"] = value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    return before, after


def test_a_worker_process_collects_its_youngest_generation_every_50000_allocations():
    before, after = _worker_thresholds(None)
    assert after == [50_000, before[1], before[2]]  # the older generations keep theirs
    assert before[0] == 700  # Python's default, which the worker replaces


@pytest.mark.parametrize(("value", "young"), [("12345", 12345), ("0", 700)])
def test_the_threshold_is_a_setting_and_zero_keeps_pythons(value, young):
    _, after = _worker_thresholds(value)
    assert after[0] == young


def test_tune_gc_fewer_young_collections_for_the_same_allocations():
    """Allocating 200,000 surviving containers runs ~285 collections at 700 and 4 at 50,000
    (each collects the youngest generation, some the older ones too)."""
    saved = gc.get_threshold()

    def young_collections(threshold: int) -> int:
        gc.collect()
        tune_gc(threshold)
        start = sum(g["collections"] for g in gc.get_stats())
        keep = [[i] for i in range(200_000)]
        ran = sum(g["collections"] for g in gc.get_stats()) - start
        del keep
        return ran

    try:
        gc.set_threshold(*saved)
        at_default = young_collections(700)
        at_worker = young_collections(50_000)
    finally:
        gc.set_threshold(*saved)
    assert at_default >= 250 and at_worker <= 5, (at_default, at_worker)

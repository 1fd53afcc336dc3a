"""The worker's app is built by `create_app`, never at import (streams/app.py)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import streams
from agents.settings import Settings
from infra.config_file import load_config
from schemas import VersionSpec
from streams import names

ROOT = Path(__file__).resolve().parent.parent

# Run in a child: a fresh interpreter, where any import-time work would show. The broker
# address is a closed port, the versions file does not exist, the home is not created.
IMPORT_EVERYTHING = """
import asyncio, importlib, json, pkgutil, sys
import streams
before = (sys.getswitchinterval(), type(asyncio.get_event_loop_policy()).__name__)
names = sorted(m.name for m in pkgutil.walk_packages(streams.__path__, "streams.")
               if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
from faust.transport.consumer import Consumer
after = (sys.getswitchinterval(), type(asyncio.get_event_loop_policy()).__name__)
print(json.dumps({"modules": names, "before": before, "after": after,
                  "patched": hasattr(Consumer.getmany, "_reviewbus_in_order")}))
"""


def test_importing_every_streams_module_does_nothing(tmp_path):
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "REVIEWBUS_KAFKA": "127.0.0.1:1",
           "REVIEWBUS_CONFIG": str(tmp_path / "missing.yaml"), "REVIEWBUS_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"streams.app", "streams.worker", "streams.web", "streams.flows.inference"} <= set(
        got["modules"])
    assert got["after"] == got["before"]  # no switch interval, no uvloop policy
    assert not got["patched"]  # Faust is patched by run_worker, not by an import
    assert not home.exists()


def _settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, kafka="127.0.0.1:1", web_port=1, **kw)


def test_create_app_builds_every_agent_for_the_served_versions(tmp_path):
    from streams.app import create_app
    from streams.registered import serving_specs

    config = load_config()
    extra = VersionSpec(id="registered-v1", backend="fake")
    ctx = create_app(_settings(tmp_path), config, "127.0.0.1:1", serving_specs(config, [extra]))
    served = [v.id for v in config.versions] + ["registered-v1"]
    # Faust agents: healing only. The inference agents (one per served version, and the
    # pool's) and the results hop read through the hops' own consumer (streams/topic_streams.py).
    assert set(ctx.agents) == {"healing"}
    assert set(ctx.app.agents) == set(ctx.agents)
    assert set(ctx.hops.topics) == {
        ctx.topics.results.get_topic_name(), ctx.topics.pool.get_topic_name(),
        *(t.get_topic_name() for t in ctx.topics.inference.values())}
    assert sorted(ctx.topics.inference) == sorted(served)
    assert ctx.topics.inference["registered-v1"].get_topic_name().endswith(
        "inference.registered-v1")
    # One shared topic for the versions registered after the start, declared with the others'
    # partitions; every topic the worker creates at start includes it.
    pool = ctx.topics.pool.get_topic_name()
    assert pool == ctx.settings.topic_prefix + "inference._pool"
    assert ctx.topics.pool.partitions == ctx.settings.partitions
    assert pool not in {t.get_topic_name() for t in ctx.topics.inference.values()}
    assert pool in names.all_topics(ctx.settings, served)
    # Eight guarded timers (malloc_trim on by default; the learner's, which does nothing
    # unless `learner.enabled`) and five tasks (registry, crash check, broker watchdog, and
    # intake and the sink, which read with consumer groups of their own:
    # streams/group_consumer.py), the hops' consumer, the results hop and an inference agent
    # per served version and the pool's.
    assert len(ctx.app._app_tasks) == 13 + 2 + len(served) + 1
    assert set(ctx.joined) == {"intake", "sink", "hops"}
    assert ctx.store is None and not ctx.registry.ready.is_set()


def test_two_apps_share_no_state(tmp_path):
    from streams.app import create_app

    config = load_config()
    a = create_app(_settings(tmp_path), config, "127.0.0.1:1", config.versions[:1])
    b = create_app(_settings(tmp_path, topic_prefix="other."), config, "127.0.0.1:1",
                   config.versions)
    assert list(a.topics.inference) == [config.versions[0].id]
    assert a.topics.pool.get_topic_name() != b.topics.pool.get_topic_name()
    assert len(b.topics.inference) == len(config.versions)
    assert a.registry is not b.registry and a.shadow_join is not b.shadow_join
    assert b.topics.name("accepted") == "other.accepted"


def test_registered_specs_are_passed_in_not_remembered():
    from streams.registered import serving_specs

    config = load_config()
    listed = VersionSpec(id=config.versions[0].id, backend="fake")
    extra = VersionSpec(id="registered-v1", backend="fake")
    assert [s.id for s in serving_specs(config)] == [v.id for v in config.versions]
    # A registered spec the file already lists keeps the file's.
    got = serving_specs(config, [listed, extra])
    assert [s.id for s in got] == [v.id for v in config.versions] + ["registered-v1"]
    assert got[0] is config.versions[0]


def test_streams_modules_are_listed():
    names = [m.name for m in pkgutil.walk_packages(streams.__path__, "streams.")]
    assert "streams.flows.registry" in names

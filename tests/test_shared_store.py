"""Several workers, one store (streams/shared_store.py), without processes: a call that finds
the hosting worker gone re-opens the store (takes it over, or follows the new host) or fails
with StoreBusy, which the sink treats as an outage (retry, nothing acked, nothing lost).
And the production compose file lets `--scale worker=N` run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import streams.shared_store as shared
from agents.errors import StoreBusy

ROOT = Path(__file__).resolve().parents[1]


class FakeLocal:
    """Stands for infra.store.Store (the engine in this process)."""

    def __init__(self) -> None:
        self.rows: list = []
        self.closed = False

    def insert_events(self, events):
        self.rows += list(events)
        return len(events)

    def query(self, sql, params=None, readonly=True):
        return ("local", sql)

    def close(self):
        self.closed = True


class FakeRemote:
    def __init__(self, url: str, up: bool = True) -> None:
        self.web_url, self.up, self.calls = url, up, 0

    def insert_events(self, events):
        self.calls += 1
        if not self.up:
            raise StoreBusy(f"worker at {self.web_url} does not answer")
        return len(events)

    def query(self, sql, params=None, readonly=True):
        if not self.up:
            raise StoreBusy(f"worker at {self.web_url} does not answer")
        return (self.web_url, sql)

    def close(self):
        pass


@pytest.fixture(autouse=True)
def fake_store_class(monkeypatch):
    monkeypatch.setattr(shared, "Store", FakeLocal)


def test_a_lost_host_is_taken_over_and_the_call_goes_through(monkeypatch):
    local = FakeLocal()
    monkeypatch.setattr(shared, "open_store", lambda settings: local)
    announced = []
    store = shared.SharedStore(None, FakeRemote("http://dead", up=False), on_host=announced.append)
    assert not store.hosting
    assert store.insert_events(["e1", "e2"]) == 2
    assert store.hosting and local.rows == ["e1", "e2"] and announced == [local]
    assert store.takeovers == 1


def test_a_new_host_is_followed(monkeypatch):
    monkeypatch.setattr(shared, "open_store", lambda settings: FakeRemote("http://new"))
    store = shared.SharedStore(None, FakeRemote("http://old", up=False))
    assert store.query("SELECT 1") == ("http://new", "SELECT 1")
    assert not store.hosting and store.takeovers == 0


def test_no_host_yet_is_an_outage_the_sink_retries(monkeypatch):
    def nobody(settings):
        raise StoreBusy("chDB store is held by process 42, and its worker does not answer")

    monkeypatch.setattr(shared, "open_store", nobody)
    dead = FakeRemote("http://dead", up=False)
    store = shared.SharedStore(None, dead)
    with pytest.raises(StoreBusy):  # streams/flows/sink.py: held, retried with backoff
        store.insert_events(["e1"])
    assert store.store is dead  # tried again next time


def test_the_host_itself_does_not_reopen(monkeypatch):
    class Down(FakeLocal):
        def insert_events(self, events):
            raise StoreBusy("down")

    monkeypatch.setattr(shared, "Store", Down)
    opened = []
    monkeypatch.setattr(shared, "open_store", lambda s: opened.append(s))
    store = shared.SharedStore(None, Down())
    with pytest.raises(StoreBusy):
        store.insert_events(["e"])
    assert opened == []


def test_compose_lets_the_worker_scale() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    worker = compose["services"]["worker"]
    assert "container_name" not in worker  # one name cannot be N containers
    assert "ports" not in worker  # N replicas cannot bind one host port
    assert not [v for v in worker.get("volumes", []) if "reviewbus" in str(v)]
    assert worker["environment"]["REVIEWBUS_CLICKHOUSE"].startswith("http")  # not chDB

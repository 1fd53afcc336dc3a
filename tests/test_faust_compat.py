"""infra/faust_check.py: the self-check that guards every patch of infra/faust_compat.py."""

from __future__ import annotations

import pytest

from agents.errors import ReviewbusError
from infra import faust_check, faust_compat
from infra.faust_check import CHECKED, FaustIncompatible, bare_signature, self_check


def test_the_self_check_passes_on_the_installed_versions():
    self_check()
    faust_compat.install()  # idempotent, and the check still sees the originals
    self_check()


def test_the_worker_refuses_a_missing_attribute_with_one_line(monkeypatch):
    import mode.utils.queues as module

    class FakeFlowControlEvent:  # a mode whose flow control lost `clear`
        pass

    monkeypatch.setattr(module, "FlowControlEvent", FakeFlowControlEvent)
    monkeypatch.setattr(faust_check, "ORIGINALS", {})
    with pytest.raises(FaustIncompatible) as err:
        self_check()
    message = str(err.value)
    assert isinstance(err.value, ReviewbusError) and "\n" not in message
    assert "mode.utils.queues.FlowControlEvent.clear is missing" in message
    assert "faust-streaming 0.15.3" in message  # what it was written against


def test_the_worker_refuses_another_signature(monkeypatch):
    class FakeConsumer:
        async def getmany(self, timeout, *, max_records):  # a new required parameter
            return None

    import faust.transport.consumer as module

    monkeypatch.setattr(module, "Consumer", FakeConsumer)
    monkeypatch.setattr(faust_check, "ORIGINALS", {})
    with pytest.raises(FaustIncompatible, match=r"Consumer.getmany has signature "
                       r"\(self, timeout, max_records\), expected \(self, timeout\)"):
        self_check()


def test_a_missing_class_is_named():
    with pytest.raises(FaustIncompatible, match="faust.transport.consumer.NoSuchConsumer is missing"):
        self_check((*CHECKED, ("faust.transport.consumer", "NoSuchConsumer", "getmany", "(self)")))


def test_signatures_are_names_and_kinds():
    def f(self, *partitions, flag=True, **kw):
        return None

    assert bare_signature(f) == "(self, *partitions, flag, **kw)"


def test_every_guard_has_a_counter():
    from prometheus_client import REGISTRY

    for guard in faust_compat.GUARDS:
        assert REGISTRY.get_sample_value("reviewbus_faust_guard_firings_total",
                                         {"guard": guard}) is not None


def test_run_worker_refuses_to_start_before_it_touches_anything(monkeypatch, tmp_path):
    import sys

    from agents.settings import Settings
    from streams.worker import run_worker

    broken = (*CHECKED, ("faust.transport.consumer", "Consumer", "no_such_method", "(self)"))
    monkeypatch.setattr(faust_check, "CHECKED", broken)
    before = sys.getswitchinterval()
    settings = Settings(home=tmp_path / "home", kafka="127.0.0.1:1")
    with pytest.raises(FaustIncompatible, match="Consumer.no_such_method is missing"):
        run_worker(settings)  # no broker at that address: the check comes first
    assert sys.getswitchinterval() == before and not (tmp_path / "home").exists()

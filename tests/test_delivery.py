"""The in-order delivery guard's decisions (streams/delivery.py); the end-to-end proof is
tests/test_reliability_crash.py (kill -9 with 2,000 events in flight, nothing lost)."""

from __future__ import annotations

from streams.delivery import expected_after_seek, install, is_skip


def test_a_record_ahead_of_the_next_expected_offset_is_a_skip():
    assert is_skip(97, 99)  # two records (97, 98) would be lost
    assert is_skip(97, 98)  # one record: the jump Faust cannot see (it reads 97 as "last read")
    assert not is_skip(97, 97)
    assert not is_skip(97, 90)  # behind: a re-read, which Faust drops or processes again
    assert not is_skip(None, 1234)  # nothing committed yet: the first record sets the position


def test_the_next_offset_after_a_seek_is_the_committed_offset():
    committed = {"a": 269, "b": None, "c": -1, "d": 0}
    assert expected_after_seek(committed) == {"a": 269, "d": 0}


def test_install_patches_faust_once():
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer

    install()
    patched = (Consumer.getmany, Consumer.seek, ThreadDelegateConsumer.seek_to_committed)
    install()
    assert (Consumer.getmany, Consumer.seek, ThreadDelegateConsumer.seek_to_committed) == patched
    assert all(getattr(f, "_reviewbus_in_order", False) for f in patched)

"""infra/partitioner.py against aiokafka's DefaultPartitioner (the Java client's rule)."""

from __future__ import annotations

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference

from infra.partitioner import KafkaPartitioner, murmur2


def test_murmur2_equals_the_java_clients_on_every_key_length():
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 70) for _ in range(40)]
    keys += [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(500)]
    keys += [b"org/repo", "dépôt/ünïcode".encode(), b"\xff" * 13]
    assert [murmur2(k) for k in keys] == [reference(k) & 0xFFFFFFFF for k in keys]


def test_keys_land_on_the_partition_every_other_client_picks():
    ours, theirs = KafkaPartitioner(), DefaultPartitioner()
    rng = random.Random(11)
    for n in (1, 2, 3, 4, 7, 12, 64):
        parts = list(range(n))
        for _ in range(300):
            key = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 48)))
            assert ours(key, parts, parts) == theirs(key, parts, parts)


def test_a_record_without_a_key_goes_to_an_available_partition():
    ours = KafkaPartitioner()
    assert {ours(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {ours(None, [0, 1], []) for _ in range(200)} == {0, 1}

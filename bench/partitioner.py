"""CPU per keyed record of the producer's partitioner: aiokafka's DefaultPartitioner against
infra/partitioner.py's KafkaPartitioner (the same partitions), on the keys the hops send
(request ids, repositories). `python -m bench.partitioner [--keys N]`; prints JSON."""

from __future__ import annotations

import argparse
import json
import sys
import timeit
import uuid

from aiokafka.partitioner import DefaultPartitioner

from infra.partitioner import KafkaPartitioner


def measure(n: int, repeat: int = 5) -> dict:
    keys = [str(uuid.uuid4()).encode() for _ in range(n)] + [b"org/repo"] * (n // 4)
    parts = [0, 1, 2, 3]
    out: dict = {"keys": len(keys)}
    for name, partitioner in (("aiokafka", DefaultPartitioner()), ("reviewbus",
                                                                   KafkaPartitioner())):
        best = min(timeit.repeat(lambda p=partitioner: [p(k, parts, parts) for k in keys],
                                 number=3, repeat=repeat))
        out[f"{name}_us_per_key"] = best / 3 / len(keys) * 1e6
    out["ratio"] = out["reviewbus_us_per_key"] / out["aiokafka_us_per_key"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.partitioner", description=__doc__)
    p.add_argument("--keys", type=int, default=4000)
    print(json.dumps(measure(p.parse_args(argv).keys)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

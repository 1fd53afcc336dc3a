"""Batched vs one-at-a-time inference of the transformers backend (the shipped adapter).

    python -m bench.bench_transformers_batching [--n 64] [--batch 32] [--dataset FILE]

Both modes go through the backend's `infer(batch)` (what the inference flow calls with the
batch `noack_take` collected): one request per call, then `--batch` requests per call. Inputs
are real commits from the shared dataset when it is there (long diffs: most hit the 256-token
limit), else synthetic ones. Prints throughput of each, the ratio, and writes JSON to
bench/results/. The issue's bar: batched >= 3x one-at-a-time on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "commits-train.jsonl.gz"


def changes(n: int, dataset: Path | None):
    from agents.learning.data import example_from_row, load_examples

    if dataset and dataset.is_file():
        return [ex.change for ex in load_examples(dataset, limit=n)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.mldata import rows

    out = [example_from_row(r).change for r in rows(12)]
    return (out * (n // len(out) + 1))[:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_transformers_batching")
    p.add_argument("--n", type=int, default=64, help="requests per mode")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--adapter", default="change-type-lora")
    args = p.parse_args(argv)

    import torch

    from agents.backends.transformers import TransformersBackend
    from schemas import VersionSpec

    spec = VersionSpec(id="bench", backend="transformers",
                       params={"adapter": args.adapter, "max_batch": args.batch})
    t0 = time.perf_counter()
    backend = TransformersBackend(spec)
    load_s = time.perf_counter() - t0
    inputs = changes(args.n, args.dataset)
    asyncio.run(backend.infer(inputs[:2]))  # warm up

    async def single() -> None:
        for c in inputs:
            await backend.infer([c])

    async def batched() -> None:
        for s in range(0, len(inputs), args.batch):
            await backend.infer(inputs[s:s + args.batch])

    rates: dict[str, list[float]] = {"one_at_a_time": [], "batched": []}
    for _ in range(args.trials):
        for name, fn in (("one_at_a_time", single), ("batched", batched)):
            t = time.perf_counter()
            asyncio.run(fn())
            rates[name].append(len(inputs) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["batched"] / med["one_at_a_time"]
    result = {
        "bench": "transformers_batching", "n": len(inputs), "batch": args.batch,
        "trials": args.trials, "model_load_s": round(load_s, 2),
        "one_at_a_time_per_s": round(med["one_at_a_time"], 2),
        "batched_per_s": round(med["batched"], 2), "speedup": round(ratio, 2),
        "all_rates": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.platform(), "device": str(backend.device),
        "inputs": "dataset" if args.dataset and args.dataset.is_file() else "synthetic",
    }
    print(f"transformers backend, {len(inputs)} requests, device {backend.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  one at a time : {result['one_at_a_time_per_s']:8.2f} req/s")
    print(f"  batched ({args.batch:>3}) : {result['batched_per_s']:8.2f} req/s")
    print(f"  speedup       : {ratio:8.2f}x (bar: >= 3x)")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-transformers-batching.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batched vs one-at-a-time inference of the transformers backend (the shipped adapter).

    python -m bench.bench_transformers_batching [--n 64] [--batch 32] [--trials 3] [--dataset FILE]
        [--max-lengths 32,64,128,256] [--forward-batches 1,4,8,32]

Both modes go through the pipeline's own inference path: `agents.inference.run_batch` (the
inference flow's call: timeout, circuit breaker, poison isolation) around the backend built by
`build_backend` from the shipped default version's spec (`backend.infer` -> one forward pass per
chunk of at most `max_batch`). Mode 1 sends one request per call; mode 2 sends `--batch`
requests per call. The two modes alternate within one process on the same loaded model and the
same inputs, trial after trial, so the ratio is not skewed by load drifting between runs.
Inputs are real commits from the shared dataset when it is there (long diffs: most hit the
256-token limit), else synthetic ones. Prints throughput of each and the ratio, and writes
bench/results/transformers_batching-<time>.json. The issue's bar: batched >= 3x one-at-a-time.

`--max-lengths` repeats the measurement with the inputs cut to each token budget (the model's
own budget is 256): batching pays per-call overhead once per batch, so its gain shrinks as each
input's compute grows; the sweep shows where on this machine it stops paying.
`--forward-batches` times the model's forward pass alone (inputs encoded beforehand) at each
batch size: the most that batching can gain on this machine, whatever the pipeline around it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def default_spec(adapter: str | None, batch: int):
    """The transformers version of the default versions file (the shipped adapter)."""
    from infra.config_file import load_config
    from schemas import VersionSpec

    spec = next((v for v in load_config().versions if v.backend == "transformers"), None)
    if spec is None or adapter:
        spec = VersionSpec(id="bench", backend="transformers",
                           params={"adapter": adapter or "change-type-lora"})
    params = {k: v for k, v in spec.params.items() if k != "train"}
    params["max_batch"] = batch
    return spec.model_copy(update={"params": params})


def forward_rates(backend, requests, sizes: list[int], min_changes: int = 64) -> list[dict]:
    """Changes/s of the model's forward pass alone (inputs encoded beforehand, no pipeline,
    no tokenizer) at each batch size: how much batching can gain on this machine at most."""
    import torch

    changes = [r.change for r in requests]
    out = []
    for size in sizes:
        batch = changes[:size]
        inputs = backend.model_inputs(batch)
        passes = max(1, min_changes // size)
        with torch.inference_mode():
            backend.model(**inputs)  # warm up
            t = time.perf_counter()
            for _ in range(passes):
                backend.model(**inputs)
            rate = passes * len(batch) / (time.perf_counter() - t)
        out.append({"batch": len(batch), "per_s": round(rate, 2)})
    for row in out:
        row["vs_batch_1"] = round(row["per_s"] / out[0]["per_s"], 2)
    return out


def matmul_ceiling(config, tokens: int, sizes: list[int], min_seconds: float = 1.0) -> dict:
    """FP32 GFLOP/s of the encoder's largest matrix product (tokens x hidden @ hidden x
    intermediate, the feed-forward layer) for `sizes` changes stacked, next to the forward
    pass's own arithmetic per change: if one change's products already run as fast as many
    changes', batching has no arithmetic to win back."""
    import torch

    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    # per layer: Q, K, V, output (4 h x h), feed-forward (2 h x i), scores and values (2 t x h)
    per_change = 2 * tokens * layers * (4 * h * h + 2 * h * i + 2 * tokens * h)
    weight = torch.randn(h, i)
    rates = []
    with torch.inference_mode():
        for size in sizes:
            x = torch.randn(size * tokens, h)
            x @ weight  # warm up
            runs, t = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t) < min_seconds:
                x @ weight
                runs += 1
            rates.append({"batch": size,
                          "gflop_per_s": round(2 * size * tokens * h * i * runs / elapsed / 1e9, 1)})
    return {"shape": f"(batch x {tokens}) x {h} @ {h} x {i}", "rates": rates,
            "forward_gflop_per_change": round(per_change / 1e9, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_transformers_batching")
    p.add_argument("--n", type=int, default=64, help="requests per mode and trial")
    p.add_argument("--batch", type=int, default=32, help="requests per call in batched mode")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--adapter", default=None,
                   help="adapter directory (default: the default versions file's transformers version)")
    p.add_argument("--label", default=None, help="suffix of the JSON file name")
    p.add_argument("--max-lengths", default="",
                   help="comma-separated token budgets to sweep (default: the model's own)")
    p.add_argument("--forward-batches", default="1,4,8,32",
                   help="batch sizes at which to time the bare forward pass (the ceiling)")
    args = p.parse_args(argv)

    import torch

    from agents.backends.base import build_backend
    from agents.breaker import CircuitBreaker
    from agents.inference import run_batch
    from agents.learning.text import build_text
    from bench.core import machine_info
    from schemas import InferenceRequest, Role, Status

    machine = machine_info()  # before the work, so that its load average is the start's
    spec = default_spec(args.adapter, args.batch)
    t0 = time.perf_counter()
    backend = build_backend(spec)
    load_s = time.perf_counter() - t0
    inputs = changes(args.n, args.dataset)
    requests = [InferenceRequest(request_id=f"bench-{i}", task=spec.task, version_id=spec.id,
                                 role=Role.replay, run_id="bench", change=c)
                for i, c in enumerate(inputs)]
    breaker = CircuitBreaker(failure_threshold=10**9, cooldown_s=0)

    async def calls(size: int) -> list:
        out = []
        for s in range(0, len(requests), size):
            out += await run_batch(spec, backend, requests[s:s + size], breaker)
        return out

    def measure() -> tuple[dict[str, float], dict[str, list[float]], bool]:
        asyncio.run(calls(args.batch))  # warm up: first forward passes, allocator, thread pool
        modes = {"one_at_a_time": 1, "batched": args.batch}
        rates: dict[str, list[float]] = {m: [] for m in modes}
        labels: dict[str, list[str]] = {}
        for _ in range(args.trials):
            for name, size in modes.items():
                t = time.perf_counter()
                results = asyncio.run(calls(size))
                rates[name].append(len(requests) / (time.perf_counter() - t))
                if any(r.status != Status.ok for r in results):
                    raise SystemExit(f"{name}: a request failed: "
                                     f"{next(r.error for r in results if r.status != Status.ok)}")
                labels[name] = [r.change_type.label for r in results]
        med = {k: statistics.median(v) for k, v in rates.items()}
        return med, rates, labels["one_at_a_time"] == labels["batched"]

    own_length = backend.meta.max_length
    sweep = []
    for length in [int(x) for x in args.max_lengths.split(",") if x.strip()]:
        backend.meta.max_length = length
        m, _, _ = measure()
        tokens = statistics.mean(len(backend.tokenizer(build_text(r.change), truncation=True,
                                                       max_length=length)["input_ids"])
                                 for r in requests)
        sweep.append({"max_length": length, "mean_tokens": round(tokens, 1),
                      "one_at_a_time_per_s": round(m["one_at_a_time"], 2),
                      "batched_per_s": round(m["batched"], 2),
                      "speedup": round(m["batched"] / m["one_at_a_time"], 2)})
        print(f"  max_length {length:>4} ({tokens:6.1f} tokens): one {m['one_at_a_time']:8.2f}/s, "
              f"batched {m['batched']:8.2f}/s, speedup {sweep[-1]['speedup']:.2f}x", flush=True)
    backend.meta.max_length = own_length
    forward = forward_rates(backend, requests,
                            [int(x) for x in args.forward_batches.split(",") if x.strip()])
    matmul = matmul_ceiling(backend.model.encoder.config, own_length,
                            [forward[0]["batch"], forward[-1]["batch"]])
    matmul["forward_batch_1_gflop_per_s"] = round(
        matmul["forward_gflop_per_change"] * forward[0]["per_s"], 1)
    med, rates, same_labels = measure()
    ratio = med["batched"] / med["one_at_a_time"]
    result = {
        "bench": "transformers_batching", "version": spec.id, "params": spec.params,
        "adapter": str(backend.adapter), "n": len(requests), "batch": args.batch,
        "trials": args.trials, "model_load_s": round(load_s, 2),
        "path": "agents.inference.run_batch -> TransformersBackend.infer",
        "one_at_a_time_per_s": round(med["one_at_a_time"], 2),
        "batched_per_s": round(med["batched"], 2), "speedup": round(ratio, 2), "bar": 3.0,
        "same_labels_in_both_modes": same_labels, "max_length": own_length,
        "sweep": sweep, "forward_only": forward, "matmul": matmul,
        "all_rates": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "torch_threads": torch.get_num_threads(), "device": str(backend.device),
        "inputs": "dataset" if args.dataset and args.dataset.is_file() else "synthetic",
        "machine": machine,
    }
    result["machine"]["load_average_at_end"] = os.getloadavg()
    print(f"transformers backend ({spec.id}, adapter {backend.adapter}), {len(requests)} requests "
          f"x {args.trials} trials, device {backend.device}, {torch.get_num_threads()} threads")
    print(f"  one at a time : {result['one_at_a_time_per_s']:8.2f} req/s")
    print(f"  batched ({args.batch:>3}) : {result['batched_per_s']:8.2f} req/s")
    print(f"  speedup       : {ratio:8.2f}x (bar: >= 3x)")
    for row in forward:
        print(f"  forward pass alone, batch {row['batch']:>3}: {row['per_s']:8.2f} changes/s "
              f"({row['vs_batch_1']:.2f}x batch 1)")
    print(f"  forward pass, batch {forward[0]['batch']}: {matmul['forward_gflop_per_change']} GFLOP "
          f"per change at {own_length} tokens = {matmul['forward_batch_1_gflop_per_s']} GFLOP/s")
    for row in matmul["rates"]:
        print(f"  feed-forward matmul {matmul['shape']}, batch {row['batch']:>3}: "
              f"{row['gflop_per_s']} GFLOP/s")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out / f"transformers_batching-{stamp}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Micro-benchmark: the cost of reading one event on the hot path, per hop's event type.

`python -m bench.parse [N]` prints microseconds per call of pydantic `model_validate_json`
(the full model), `orjson.loads` (a dict: enough for a hop that only reads a few fields or
forwards), and `model_dump_json` (what each output costs to encode); for InferenceResult also
msgspec's typed decode and encode, through a msgspec.Struct mirror of the model (the same
fields, enums and bounds; measurement only: msgspec is a dev dependency, the bus does not use
it). Used to decide where a hop builds the model (docs/concepts/batching.md, "Parse once per
hop, cheaply").
"""

from __future__ import annotations

import functools
import json
import sys
import time

import orjson

from agents.intake import accept_input
from agents.settings import Limits
from schemas import InferenceRequest, InferenceResult, Role, Status

from .load import commit_events

try:
    import msgspec

    from .parse_msgspec import Result as MsgspecResult
except ImportError:  # a dev dependency: `pip install -e '.[dev]'`
    msgspec = None


def _per_call_us(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def samples() -> dict[str, tuple[type, bytes]]:
    _, _, commit = commit_events(1, "parse")[0]
    accepted = accept_input(commit, source_topic="commits", kind="commit", task="code-review",
                            limits=Limits())
    request = InferenceRequest(request_id=accepted.request_id, task=accepted.task,
                               version_id="v1", role=Role.primary, change=accepted.change,
                               accepted_at=accepted.occurred_at)
    result = InferenceResult(request_id=request.request_id, task=request.task, version_id="v1",
                             role=Role.primary, status=Status.ok, latency_ms=1.0,
                             repo=accepted.change.repo, sha=accepted.change.sha)
    return {"AcceptedChange": (type(accepted), accepted.model_dump_json().encode()),
            "InferenceRequest": (InferenceRequest, request.model_dump_json().encode()),
            "InferenceResult": (InferenceResult, result.model_dump_json().encode())}


def run(n: int = 20_000) -> dict:
    out = {}
    for name, (model, raw) in samples().items():
        obj = model.model_validate_json(raw)
        out[name] = {
            "bytes": len(raw),
            "pydantic_validate_json_us": round(
                _per_call_us(functools.partial(model.model_validate_json, raw), n), 2),
            "orjson_loads_us": round(_per_call_us(functools.partial(orjson.loads, raw), n), 2),
            "pydantic_dump_json_us": round(_per_call_us(obj.model_dump_json, n), 2),
        }
    if msgspec is not None:
        _, raw = samples()["InferenceResult"]
        decoder = msgspec.json.Decoder(MsgspecResult, strict=False)
        decoded = decoder.decode(raw)
        out["InferenceResult"] |= {
            "msgspec_decode_us": round(_per_call_us(functools.partial(decoder.decode, raw), n), 2),
            "msgspec_encode_us": round(
                _per_call_us(functools.partial(msgspec.json.encode, decoded), n), 2)}
    return out


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000), indent=2))

"""Hostile input messages for the fuzz tests: the hypothesis strategies (pure intake) and a
seeded plain-Python generator of the same families (a few hundred through the real worker)."""

from __future__ import annotations

import json
import random

from hypothesis import strategies as st

VALID = {"repo": "acme/app", "sha": "a1b2c3d4e5", "message": "fix(api): handle None\n\nbody",
         "diff": "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n",
         "files": [{"path": "x.py", "status": "modified", "added": 1, "deleted": 1,
                    "content": "a = 2\n"}]}
FIELDS = ["repo", "sha", "message", "diff", "files", "branch", "pull_request", "author",
          "ci", "event_id", "schema_version", "diff_truncated", "occurred_at", "shas",
          "base_sha"]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


@st.composite
def valid_commits(draw) -> bytes:
    event = dict(VALID)
    event["sha"] = draw(st.text("0123456789abcdef", min_size=4, max_size=40))
    event["message"] = draw(st.sampled_from(["feat: x", "fix!: y", "docs(readme): z", "plain",
                                             ""])) + draw(st.text(max_size=30))
    if draw(st.booleans()):
        event["pull_request"] = draw(st.integers(min_value=0, max_value=2**40))
    if draw(st.booleans()):
        event["event_id"] = draw(st.text("abcdefXYZ0123456789-_.:", min_size=1, max_size=60))
    return dumps(event)


@st.composite
def truncated(draw) -> bytes:
    raw = draw(valid_commits())
    return raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]


@st.composite
def wrong_types(draw) -> bytes:
    event = dict(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        event[draw(st.sampled_from(FIELDS))] = draw(json_values)
    return dumps(event)


@st.composite
def wrong_files(draw) -> bytes:
    files = draw(st.lists(st.dictionaries(
        st.sampled_from(["path", "status", "added", "deleted", "content", "content_truncated",
                         "x"]), json_values, max_size=6), max_size=4))
    return dumps({**VALID, "files": files})


@st.composite
def huge_fields(draw) -> bytes:
    field = draw(st.sampled_from(["diff", "message", "repo", "author", "content", "files"]))
    size = draw(st.integers(min_value=1_000, max_value=300_000))
    event = dict(VALID)
    if field == "content":
        event["files"] = [{"path": "big.py", "content": "x" * size}]
    elif field == "files":
        event["files"] = [{"path": f"f{i}.py"} for i in range(size // 500)]
    else:
        event[field] = "y" * size
    return dumps(event)


@st.composite
def deep_nesting(draw) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    where = draw(st.sampled_from(["root", "field", "ci"]))
    inner = opener * depth + "1" + closer * depth
    if where == "root":
        return inner.encode()
    body = json.dumps(VALID)[:-1]
    return f'{body}, "{"x" if where == "field" else "ci"}": {inner}}}'.encode()


@st.composite
def schema_versions(draw) -> bytes:
    version = draw(json_values | st.integers())
    return dumps({**VALID, "schema_version": version})


@st.composite
def invalid_utf8(draw) -> bytes:
    raw = bytearray(draw(valid_commits()))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80",
                                           b"\xf4\x90\x80\x80", b"\x00"]))
    return bytes(raw)


random_bytes = st.binary(max_size=400)

FAMILIES = {
    "random_bytes": random_bytes, "truncated": truncated(), "wrong_types": wrong_types(),
    "wrong_files": wrong_files(), "huge_fields": huge_fields(), "deep_nesting": deep_nesting(),
    "schema_versions": schema_versions(), "invalid_utf8": invalid_utf8(),
    "valid": valid_commits(),
}


# ---- the same families, from a seeded Random (no hypothesis engine: a fixed batch) ------------


def seeded_batch(seed: int, n: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)

    def text(k: int) -> str:
        return "".join(rnd.choice("abcdefXYZ ü€\n\t\"\\") for _ in range(rnd.randint(0, k)))

    def value(depth: int = 0):
        makers = [lambda: None, lambda: rnd.random() < 0.5,
                  lambda: rnd.randint(-(2**66), 2**66), lambda: rnd.random() * 1e9,
                  lambda: text(12),
                  lambda: [value(depth + 1) for _ in range(rnd.randint(0, 3))],
                  lambda: {text(5): value(depth + 1) for _ in range(rnd.randint(0, 3))}]
        return makers[rnd.randrange(7 if depth < 3 else 5)]()

    def valid() -> bytes:
        sha = "".join(rnd.choice("0123456789abcdef") for _ in range(rnd.randint(7, 40)))
        return dumps({**VALID, "sha": sha, "event_id": f"fz{seed}-{rnd.getrandbits(48):x}",
                      "message": rnd.choice(["feat: a", "fix: b", "chore: c", "plain"])})

    makers = {
        "valid": valid,
        "random_bytes": lambda: rnd.randbytes(rnd.randint(0, 300)),
        "truncated": lambda: (lambda r: r[: rnd.randrange(len(r))])(valid()),
        "wrong_types": lambda: dumps({**VALID, rnd.choice(FIELDS): value()}),
        "huge_fields": lambda: dumps({**VALID, rnd.choice(["diff", "message", "author"]):
                                      "z" * rnd.randint(10_000, 250_000)}),
        "deep_nesting": lambda: ("[" * (d := rnd.randint(500, 3000)) + "]" * d).encode(),
        "schema_versions": lambda: dumps({**VALID, "schema_version": rnd.choice(
            [0, 2, 99, -1, "1", None, [1], {"v": 1}, 1.5, True])}),
        "invalid_utf8": lambda: (lambda r: r[:5] + b"\xff\xfe" + r[5:])(valid()),
        "too_many_files": lambda: dumps({**VALID, "event_id": f"many-{rnd.getrandbits(40):x}",
                                         "sha": f"{rnd.getrandbits(40):010x}",
                                         "files": [{"path": f"f{i}.py", "content": "a = 1\n"}
                                                   for i in range(rnd.randint(4, 8))]}),
    }
    names = list(makers)
    out = []
    for i in range(n):
        family = names[i % len(names)] if i < len(names) else rnd.choice(names)
        out.append((family, makers[family]()))
    return out

"""The JSON schema sent with `response_format: json_schema` (and quoted in the prompt) is generated
from the pydantic answer model, and the two agree: the same keys at every level, the same enums
and bounds, and on a set of answers the schema accepts exactly what the model accepts (the model
may only be more lenient: defaults for keys the schema asks for, label aliases)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import BaseModel

from agents.backends.litellm import OUTPUT_JSON_SCHEMA, LiteLLMParams, LLMReview, build_messages, parse_review
from agents.backends.litellm.answer import output_json_schema
from agents.errors import InvalidOutput
from schemas import CHANGE_TYPES, ChangedFile, Dimension, NormalizedChange, Severity

jsonschema = pytest.importorskip("jsonschema")

GOOD: dict[str, Any] = {
    "change_type": {"label": "feature", "confidence": 0.8, "scores": {"feature": 0.8, "chore": 0.2}},
    "risk": {"score": 0.4, "level": "medium"},
    "findings": [{"path": "app/x.py", "line": 3, "end_line": None, "dimension": "security",
                  "severity": "high", "confidence": 0.7, "rule_id": "shell-injection",
                  "message": "shell=True", "suggestion": None}],
    "suggested_message": "feat(x): add x",
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _same_keys(model: type[BaseModel], schema: dict[str, Any], where: str) -> None:
    if schema.get("type") == "array" or "array" in schema.get("type", []):
        schema = schema["items"]
    assert set(schema["properties"]) == set(model.model_fields), where
    for name, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        if inner is not None:
            _same_keys(inner, schema["properties"][name], f"{where}.{name}")


def test_the_schema_is_generated_from_the_model_with_the_same_keys_enums_and_bounds() -> None:
    assert output_json_schema() == OUTPUT_JSON_SCHEMA
    _same_keys(LLMReview, OUTPUT_JSON_SCHEMA, "answer")
    props = OUTPUT_JSON_SCHEMA["properties"]
    assert props["change_type"]["properties"]["label"]["enum"] == list(CHANGE_TYPES)
    finding = props["findings"]["items"]["properties"]
    assert finding["dimension"]["enum"] == [d.value for d in Dimension]
    assert finding["severity"]["enum"] == [s.value for s in Severity]
    assert (finding["confidence"]["minimum"], finding["confidence"]["maximum"]) == (0, 1)
    assert props["findings"]["maxItems"] == LLMReview.model_fields["findings"].metadata[0].max_length
    # What providers accept: one self-contained document, no $ref, titles or defaults.
    text = json.dumps(OUTPUT_JSON_SCHEMA)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text
    assert '"default"' not in text
    jsonschema.Draft202012Validator.check_schema(OUTPUT_JSON_SCHEMA)


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    answer = copy.deepcopy(GOOD)
    node: Any = answer
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return answer


# Answers the schema refuses; the model must refuse each of them too (no drift either way).
REFUSED = [
    (["change_type", "label"], "bugfix"),
    (["change_type", "confidence"], 1.5),
    (["change_type", "scores", "feature"], -0.1),
    (["risk", "score"], 2),
    (["risk", "level"], "extreme"),
    (["findings", 0, "severity"], "urgent"),
    (["findings", 0, "dimension"], "style"),
    (["findings", 0, "confidence"], -1),
    (["findings", 0, "line"], -3),
    (["findings", 0, "path"], ""),
    (["findings", 0, "message"], ""),
    (["change_type"], KeyError),
    (["suggested_message"], KeyError),
]


@pytest.mark.parametrize(("path", "value"), REFUSED, ids=[".".join(map(str, p)) for p, _ in REFUSED])
def test_what_the_schema_refuses_the_model_refuses(path: list[Any], value: Any) -> None:
    answer = _broken(path, value)
    assert list(jsonschema.Draft202012Validator(OUTPUT_JSON_SCHEMA).iter_errors(answer))
    with pytest.raises(InvalidOutput):
        parse_review(json.dumps(answer))


def test_what_the_schema_accepts_the_model_accepts() -> None:
    for answer in (GOOD, _broken(["risk"], None), _broken(["findings"], []),
                   _broken(["risk", "level"], None)):
        jsonschema.validate(answer, OUTPUT_JSON_SCHEMA)
        parse_review(json.dumps(answer))


def test_the_prompt_quotes_the_generated_schema() -> None:
    change = NormalizedChange(repo="o/r", sha="s1", message="m", diff="",
                              files=[ChangedFile(path="a.py", status="added")])
    system = build_messages(change, LiteLLMParams(model="m"))[0]["content"]
    assert json.dumps(OUTPUT_JSON_SCHEMA, separators=(",", ":")) in system

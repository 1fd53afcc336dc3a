"""The `params` of a litellm version, validated (pydantic), and the versions-file check."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas import VersionSpec

from ...errors import ConfigError


class LiteLLMParams(BaseModel):
    """The `params` of a litellm version. Secrets never go here (see REVIEWBUS_LITELLM_API_KEY)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)  # any LiteLLM model string: "gpt-4o-mini", "ollama_chat/qwen2.5-coder"
    api_base: str | None = None  # e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible), http://localhost:11434
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = 0  # sent where the provider supports it (dropped elsewhere); null: never sent
    max_tokens: int = Field(default=1024, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=2, ge=0, le=10)  # extra attempts on transient errors
    backoff_s: float = Field(default=0.5, ge=0)  # first wait; doubles per attempt
    max_backoff_s: float = Field(default=8.0, ge=0)
    concurrency: int = Field(default=4, ge=1, le=64)  # calls in flight per batch
    response_format: Literal["json_object", "json_schema", "none"] = "json_object"
    max_diff_chars: int = Field(default=12_000, ge=0)  # the diff budget of the prompt
    max_message_chars: int = Field(default=4_000, ge=0)
    max_files_listed: int = Field(default=100, ge=0)
    max_findings: int = Field(default=50, ge=0)
    # USD per token; when set they win over LiteLLM's price map (self-hosted, negotiated rates).
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    # Answers of a batch that failed are kept this long, so that the one-by-one retry of the
    # batch (poison isolation) does not pay twice for the good neighbours. 0 disables.
    reuse_s: float = Field(default=60.0, ge=0)
    # LiteLLM's own test hook: a canned answer, or "litellm.RateLimitError" and the like.
    mock_response: str | None = None

    @field_validator("api_base")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("api_base must be an http(s) URL")
        return v

    @classmethod
    def parse(cls, version_id: str, raw: dict[str, Any]) -> LiteLLMParams:
        secrets = sorted(k for k in set(raw) - set(cls.model_fields)
                         if re.search(r"key|secret|token|password|auth", k, re.IGNORECASE))
        if secrets:
            raise ConfigError(f"version {version_id}: {secrets} must not be in the versions file; "
                              "keys come only from the secret setting REVIEWBUS_LITELLM_API_KEY")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise ConfigError(f"version {version_id}: litellm params.{where}: {first['msg']}") from exc


def check_litellm_versions(versions: list[Any]) -> None:
    """Validate the params of every litellm version of a versions file (mappings or specs)."""
    for v in versions:
        spec = v.model_dump() if isinstance(v, VersionSpec) else v
        if isinstance(spec, dict) and spec.get("backend") == "litellm":
            LiteLLMParams.parse(str(spec.get("id")), dict(spec.get("params") or {}))

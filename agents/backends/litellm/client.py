"""The LiteLLM call: one chat completion per change, with retries, scrubbing, cost and reuse.

Each call has a timeout inside LiteLLM plus an outer `asyncio.wait_for`; transient errors
(timeouts, connection errors, 408/409/425/429/5xx) are retried with exponential backoff
(tenacity). Every prediction carries usage (tokens, cost in USD), the model and a hash of the
exact prompt sent. `litellm` is imported only when the first such backend is built, with
`LITELLM_LOCAL_MODEL_COST_MAP=True` so that it reads its packaged price list instead of fetching
one. The API key comes only from the secret setting `REVIEWBUS_LITELLM_API_KEY`; it is passed per
call, never logged, and scrubbed from every error text that could reach a result or a row.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from cachetools import TTLCache
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from schemas import NormalizedChange, Usage, VersionSpec

from ...errors import BackendError, ConfigError, InvalidOutput
from ..base import Prediction
from ..filters import validate_filters
from .answer import OUTPUT_JSON_SCHEMA, parse_review, to_prediction
from .params import LiteLLMParams
from .prompt import build_messages, prompt_hash

log = logging.getLogger("reviewbus.litellm")

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
OUTER_GRACE_S = 2.0  # the outer wait_for fires this long after LiteLLM's own timeout
_REUSE_MAX = 256


class LLMTimeout(BackendError, TimeoutError):
    """No answer within the per-call timeout, after every retry (a `timeout` result)."""


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch prices online
    try:
        import litellm
    except ImportError as exc:
        raise ConfigError("the litellm backend needs litellm: pip install 'reviewbus[ml]' "
                          "(or 'litellm>=1.40,!=1.82.7,!=1.82.8')") from exc
    litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners in worker logs
    litellm.telemetry = False
    return litellm


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in TRANSIENT_STATUS
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"APIConnectionError", "APITimeoutError", "Timeout"})


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or any(
        c.__name__ in ("APITimeoutError", "Timeout") for c in type(exc).__mro__)


class LiteLLMBackend:
    """A version served by a LiteLLM model. params: see LiteLLMParams."""

    def __init__(self, spec: VersionSpec) -> None:
        from ...settings import load_settings

        self.spec = spec
        self.params = LiteLLMParams.parse(spec.id, dict(spec.params))
        self.filters = validate_filters(spec.id, list(spec.filters))
        self.source = f"litellm:{self.params.model}"[:200]
        secret = load_settings().litellm_api_key
        key = secret.get_secret_value() if secret is not None else ""
        # A local OpenAI-compatible server without auth still needs *some* key for the client.
        self._api_key = key or ("none" if self.params.api_base else None)
        self._secret = key
        self._litellm = _import_litellm()
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        # Answers of a failed batch, each taken at most once within reuse_s (see _remember).
        self._reuse: TTLCache[str, Prediction] | None = (
            TTLCache(maxsize=_REUSE_MAX, ttl=self.params.reuse_s) if self.params.reuse_s > 0
            else None)
        self.calls = 0  # requests sent to the model, retries included (for tests and metrics)

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        outcomes = await asyncio.gather(*(self._guarded(c) for c in batch), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if not failures:
            return [o for o in outcomes if isinstance(o, Prediction)]
        for change, o in zip(batch, outcomes):  # keep the good answers for the one-by-one retry
            if isinstance(o, Prediction):
                self._remember(change, o)
        # A timeout wins (status `timeout`), then invalid output, then the first error.
        for kind in (TimeoutError, InvalidOutput, BaseException):
            for o in failures:
                if isinstance(o, kind):
                    raise o
        raise failures[0]  # unreachable: BaseException matches everything

    async def close(self) -> None:
        if self._reuse is not None:
            self._reuse.clear()

    # -- one change

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.params.concurrency))
        return self._slots[1]

    async def _guarded(self, change: NormalizedChange) -> Prediction:
        async with self._semaphore():
            return await self.predict(change)

    async def predict(self, change: NormalizedChange) -> Prediction:
        messages = build_messages(change, self.params)
        phash = prompt_hash(messages)
        reused = self._take(phash)
        if reused is not None:
            return reused
        response = await self._complete(messages)
        usage = self._usage(response, phash)
        try:
            choice = response.choices[0]
            content = choice.message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise InvalidOutput("the model's response has no message") from exc
        try:
            review = parse_review(content)
        except InvalidOutput as exc:
            if getattr(choice, "finish_reason", None) != "length":
                raise
            raise InvalidOutput(f"the answer was cut at max_tokens={self.params.max_tokens} "
                                f"(raise `max_tokens`): {exc}") from exc
        return to_prediction(review, change, source=self.source, filters=self.filters,
                             max_findings=self.params.max_findings, usage=usage)

    def _kwargs(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        p = self.params
        kwargs: dict[str, Any] = {
            "model": p.model, "messages": messages, "temperature": p.temperature,
            "max_tokens": p.max_tokens, "timeout": p.request_timeout_s,
            "num_retries": 0, "max_retries": 0,  # we retry (tenacity, _complete), with backoff
            "drop_params": True,  # e.g. a seed where the provider has none
        }
        if p.seed is not None:
            kwargs["seed"] = p.seed
        if p.api_base:
            kwargs["api_base"] = p.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if p.response_format == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        elif p.response_format == "json_schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "review", "schema": OUTPUT_JSON_SCHEMA, "strict": False}}
        if p.mock_response is not None:
            kwargs["mock_response"] = p.mock_response
        return kwargs

    async def _complete(self, messages: list[dict[str, str]]) -> Any:
        p = self.params
        kwargs = self._kwargs(messages)
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            self.calls += 1
            return await asyncio.wait_for(self._litellm.acompletion(**kwargs),
                                          timeout=p.request_timeout_s + OUTER_GRACE_S)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient), stop=stop_after_attempt(p.retries + 1),
            wait=wait_exponential(multiplier=p.backoff_s, max=p.max_backoff_s),
            before_sleep=self._log_retry, reraise=True)
        try:
            return await retrying(attempt)
        except Exception as exc:  # noqa: BLE001 - translated: the error type says what happened
            # `from None`: a provider's error may quote the key, and a logged traceback would
            # print the original; the translated text is scrubbed.
            raise self._translate(exc, attempts) from None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s: attempt %d failed (%s), retrying in %.2fs", self.spec.id,
                 state.attempt_number, self._scrub(f"{type(exc).__name__}: {exc}")[:200], wait)

    def _translate(self, exc: BaseException, attempts: int) -> BackendError:
        tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        if _is_timeout(exc):
            return LLMTimeout(f"{self.params.model}: no answer within "
                              f"{self.params.request_timeout_s:g} s {tries}")
        text = self._scrub(f"{type(exc).__name__}: {exc}")
        text = " ".join(text.split())[:400]
        return BackendError(f"{self.params.model}: {text} ({tries})")

    def _scrub(self, text: str) -> str:
        """The key, and any 8-character piece of it, never leaves this object."""
        key = self._secret
        if not key:
            return text
        text = text.replace(key, "***")
        for i in range(0, max(len(key) - 7, 0)):
            piece = key[i:i + 8]
            if piece in text:
                text = text.replace(piece, "***")
        return text

    # -- usage and cost

    def _usage(self, response: Any, phash: str) -> Usage:
        u = getattr(response, "usage", None)
        pt = int(getattr(u, "prompt_tokens", 0) or 0)
        ct = int(getattr(u, "completion_tokens", 0) or 0)
        return Usage(prompt_tokens=pt, completion_tokens=ct,
                     cost_usd=round(self._cost(response, pt, ct), 10),
                     model=self.params.model, prompt_hash=phash)

    def _cost(self, response: Any, pt: int, ct: int) -> float:
        p = self.params
        if p.input_cost_per_token is not None or p.output_cost_per_token is not None:
            return pt * (p.input_cost_per_token or 0.0) + ct * (p.output_cost_per_token or 0.0)
        try:
            return float(self._litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # noqa: BLE001 - a model LiteLLM has no price for costs 0 unless configured
            return 0.0

    # -- answers kept for the one-by-one retry of a failed batch

    def _remember(self, change: NormalizedChange, pred: Prediction) -> None:
        if self._reuse is not None:
            self._reuse[prompt_hash(build_messages(change, self.params))] = pred

    def _take(self, phash: str) -> Prediction | None:
        # Used once: a later request for the same prompt pays for its own call.
        return self._reuse.pop(phash, None) if self._reuse is not None else None

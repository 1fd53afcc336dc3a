"""The `litellm` backend: any LiteLLM model (hosted, a local OpenAI-compatible server, Ollama) as
a version. One chat completion per change, at temperature 0 with a fixed seed where the provider
supports one, asking for one JSON object that is validated against the output schema shared by
every version (an answer that does not validate is `InvalidOutput`, never a crash).

- params: LiteLLMParams (the version's `params`) and check_litellm_versions;
- answer: the answer models, their generated JSON schema, parsing, answer -> Prediction;
- prompt: the messages sent and their hash;
- client: LiteLLMBackend (the call with retries, scrubbing, cost and the reuse cache).
"""

from .answer import OUTPUT_JSON_SCHEMA, LLMReview, output_json_schema, parse_review, to_prediction
from .client import LiteLLMBackend, LLMTimeout
from .params import LiteLLMParams, check_litellm_versions
from .prompt import build_messages, prompt_hash

__all__ = ["OUTPUT_JSON_SCHEMA", "LLMReview", "LLMTimeout", "LiteLLMBackend", "LiteLLMParams",
           "build_messages", "check_litellm_versions", "output_json_schema", "parse_review",
           "prompt_hash", "to_prediction"]

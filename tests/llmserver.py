"""A local OpenAI-compatible chat-completions server for tests (stdlib only, one thread).

Answers POST /v1/chat/completions with a canned review in JSON, built from the prompt: a
finding on the first listed file, line 1. Markers written anywhere in the prompt (the commit
message is part of it) choose the behaviour per request, so concurrent requests stay
deterministic:

    [[invalid]]        answer text that is not JSON
    [[schema]]         JSON that does not match the output schema (unknown label)
    [[fence]]          the JSON wrapped in a Markdown code fence
    [[think]]          a reasoning model's `<think>...</think>` block before the JSON
    [[cut]]            the JSON cut short, finish_reason "length" (max_tokens reached)
    [[label:docs]]     this change-type label (default: feature)
    [[slow:1.5]]       wait this many seconds before answering
    [[fail:500x2]]     answer the first 2 requests of this prompt with HTTP 500, then normally
    [[fail:500]]       always HTTP 500
    [[auth]]           HTTP 401 whose error message echoes the Authorization header
    [[ghost]]          also a finding on a path the change does not touch
    [[bpath]]          the finding's path as the diff header spells it (`b/<path>`)

Every request is recorded (path, headers, parsed body) in `requests`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMPT_TOKENS = 120
COMPLETION_TOKENS = 30


def review_answer(user: str) -> dict:
    label = (re.search(r"\[\[label:(\w+)\]\]", user) or [None, "feature"])[1]
    first = re.search(r"^- (\S+) \(", user, re.MULTILINE)
    findings = []
    if first:
        path = ("b/" if "[[bpath]]" in user else "") + first.group(1)
        findings.append({"path": path, "line": 1, "dimension": "security",
                         "severity": "high", "confidence": 0.8, "rule_id": "Shell Injection",
                         "message": "user input reaches a shell", "suggestion": "use a list argv"})
    if "[[ghost]]" in user:
        findings.append({"path": "not/in/change.py", "line": 3, "dimension": "correctness",
                         "severity": "low", "confidence": 0.5, "rule_id": "ghost",
                         "message": "a file the change does not touch"})
    answer = {"change_type": {"label": label, "confidence": 0.7,
                              "scores": {label: 0.7, "chore": 0.3} if label != "chore"
                              else {"chore": 1.0}},
              "risk": {"score": 0.4, "level": "medium"},
              "findings": findings,
              "suggested_message": "feat(runner): add a command runner",
              "summary": "an extra key the schema ignores"}
    if "[[schema]]" in user:
        answer["change_type"]["label"] = "improvement"
    return answer


class FakeLLMServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                server._record(self.path, dict(self.headers), body)
                status, payload, delay = server._answer(body, self.headers.get("Authorization"))
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def start(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _record(self, path: str, headers: dict, body: dict) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": {k.lower(): v for k, v in headers.items()},
                                  "body": body})

    def requests_with(self, marker: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if marker in user_text(r)]

    def _answer(self, body: dict, auth: str | None) -> tuple[int, dict, float]:
        user = "\n".join(m.get("content") or "" for m in body.get("messages", []))
        slow = re.search(r"\[\[slow:([\d.]+)\]\]", user)
        delay = float(slow.group(1)) if slow else 0.0
        if "[[auth]]" in user:
            return 401, {"error": {"message": f"Incorrect API key provided: {auth}",
                                   "type": "invalid_request_error", "code": "invalid_api_key"}}, 0
        fail = re.search(r"\[\[fail:(\d{3})(?:x(\d+))?\]\]", user)
        if fail:
            key = user
            with self._lock:
                seen = self._failures[key] = self._failures.get(key, 0) + 1
            if fail.group(2) is None or seen <= int(fail.group(2)):
                return int(fail.group(1)), {"error": {"message": "upstream overloaded",
                                                      "type": "server_error"}}, delay
        content = json.dumps(review_answer(user))
        if "[[invalid]]" in user:
            content = "Sure! Here is my review: the change looks fine."
        elif "[[fence]]" in user:
            content = f"```json\n{content}\n```"
        elif "[[think]]" in user:  # braces inside, so a "first '{'" parser would fail
            content = f"<think>\nThe user wants {{JSON}}; label it.\n</think>\n\n{content}"
        finish = "stop"
        if "[[cut]]" in user:
            content, finish = content[: len(content) // 2], "length"
        return 200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", "?"),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
        }, delay


def user_text(request: dict) -> str:
    return "\n".join(m.get("content") or "" for m in request["body"].get("messages", [])
                     if m.get("role") == "user")

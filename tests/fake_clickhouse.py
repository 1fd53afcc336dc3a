"""A stand-in ClickHouse HTTP server for tests: the HTTP interface, backed by chDB.

No ClickHouse server binary can be had here (Debian's is 18.16, older than DateTime64 and
bind parameters), and chDB cannot serve HTTP itself. This serves the subset of ClickHouse's
HTTP interface that clickhouse-connect's HTTP client uses: the query in the body or in the
`query` parameter, `param_*` bind parameters, `readonly` and other settings as URL
parameters, results in the FORMAT the client asks for, inserts as `INSERT ... FORMAT Native`
with the data in the body (lz4 or uncompressed), errors as HTTP 500 with
`X-ClickHouse-Exception-Code`. Basic auth or X-ClickHouse-User/Key is checked when a
password is given.

Run as a process: `python tests/fake_clickhouse.py DATA_DIR PORT_FILE [PASSWORD]`; it writes
its port to PORT_FILE once it listens.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb

TRANSPORT = {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
             "session_check", "compress", "decompress", "enable_http_compression",
             "wait_end_of_query", "send_progress_in_http_headers", "user", "password",
             "http_headers_progress_interval_ms", "client_protocol_version"}
INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.*?\bFORMAT\s+(\w+))[ \t]*(?:\r?\n|$)", re.I | re.S)
FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*$", re.I)
CODE = re.compile(r"Code:\s*(\d+)")


class Engine:
    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.rw = chdb.connect(path)
        self.ro = chdb.connect(path)
        self.ro.query("SET readonly = 1")

    def run(self, sql: str, fmt: str, params: dict, readonly: bool) -> bytes:
        with self.lock:
            conn = self.ro if readonly else self.rw
            result = conn.query(sql, fmt, params=params or None)
        return result.bytes() if hasattr(result, "bytes") else bytes(result)


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        if urlsplit(self.path).path in ("/ping", "/"):
            return self._send(200, b"Ok.\n", {})
        return self.do_POST()

    def do_POST(self):
        url = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._chunked()
        if not self._authorized(url):
            return self._error(516, "Code: 516. DB::Exception: default: Authentication failed")
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "lz4":
                import lz4.frame
                body = lz4.frame.decompress(body)
            elif encoding == "gzip":
                import gzip
                body = gzip.decompress(body)
            elif encoding:
                return self._error(400, f"Code: 1. DB::Exception: fake server: no {encoding}")
            return self._answer(url, body)
        except Exception as exc:  # noqa: BLE001  (the engine's error goes back to the client)
            return self._error(500, str(exc))

    def _answer(self, url: dict, body: bytes):
        params = {k[6:]: v for k, v in url.items() if k.startswith("param_")}
        settings = {k: v for k, v in url.items() if k not in TRANSPORT and not k.startswith("param_")}
        readonly = settings.get("readonly", "0") not in ("0", "")
        query = url.get("query", "").encode()
        data = b""
        if query and body:
            data = body  # INSERT ... FORMAT X in the URL, its rows in the body
        else:
            query = query or body
        match = INSERT.match(query)
        if match and not data:
            data = query[match.end():]
            query = match.group(1)
        sql = query.decode()
        if INSERT.match(query):
            if readonly:
                raise RuntimeError("Code: 164. DB::Exception: Cannot execute query in readonly "
                                   "mode. (READONLY)")
            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                f.write(data)
            try:
                head, fmt = re.match(r"(.*?)\bFORMAT\s+(\w+)\s*$", sql, re.I | re.S).groups()
                self.server.engine.run(f"{head} FROM INFILE '{f.name}' FORMAT {fmt}", "TSV", {}, False)
            finally:
                os.unlink(f.name)
            return self._send(200, b"", {"X-ClickHouse-Summary": json.dumps({"written_rows": "1"})})
        fmt_match = FORMAT.search(sql)
        fmt = url.get("default_format", "TabSeparated")
        if fmt_match:
            fmt, sql = fmt_match.group(1), sql[: fmt_match.start()]
        out = self.server.engine.run(sql, fmt, params, readonly)
        return self._send(200, out, {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC"})

    def _authorized(self, url: dict) -> bool:
        password = self.server.password
        if not password:
            return True
        given = url.get("password") or self.headers.get("X-ClickHouse-Key")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode().partition(":")[2]
        return given == password

    def _chunked(self) -> bytes:
        out = b""
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def _error(self, status: int, message: str):
        code = CODE.search(message)
        headers = {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"}
        return self._send(status, message.encode() + b"\n", headers)

    def _send(self, status: int, data: bytes, headers: dict):
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
        self.send_header("X-ClickHouse-Server-Display-Name", "fake-clickhouse")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, path: str, password: str | None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.engine = Engine(path)
        self.password = password


def main() -> None:
    path, port_file = sys.argv[1], sys.argv[2]
    password = sys.argv[3] if len(sys.argv) > 3 else None
    server = Server(path, password)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()

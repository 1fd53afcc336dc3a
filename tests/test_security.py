"""Security without a running stack: secrets are typed as secrets and never printed; Kafka TLS
and SASL and ClickHouse credentials reach the clients from settings; input limits come from
settings; the analyser subprocess sees no network and stays bounded on pathological code."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
from pydantic import SecretStr

from agents.backends import analyzers
from agents.backends.analyzers import AnalyzerBackend
from agents.errors import BackendError, StoreError
from agents.settings import Limits, Settings
from infra.kafka import client_kwargs
from infra.store import Store, redact_dsn
from schemas import ChangedFile, NormalizedChange, VersionSpec

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Planted-9f8e7d"


def test_secret_settings_are_secret_types_and_never_printed(monkeypatch):
    for name in ("KAFKA_SASL_PASSWORD", "CLICKHOUSE_PASSWORD", "LITELLM_API_KEY"):
        monkeypatch.setenv(f"REVIEWBUS_{name}", SECRET)
    settings = Settings()
    for field in ("kafka_sasl_password", "clickhouse_password", "litellm_api_key"):
        value = getattr(settings, field)
        assert isinstance(value, SecretStr) and value.get_secret_value() == SECRET
    for text in (repr(settings), str(settings), settings.model_dump_json(),
                 json.dumps(settings.model_dump(mode="json"))):
        assert SECRET not in text


@pytest.mark.parametrize("protocol, tls, sasl", [
    ("PLAINTEXT", False, False), ("SSL", True, False),
    ("SASL_PLAINTEXT", False, True), ("SASL_SSL", True, True),
])
def test_kafka_tls_and_sasl_come_from_settings(protocol, tls, sasl):
    settings = Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="svc", kafka_sasl_password=SecretStr(SECRET))
    kw = client_kwargs(settings, "k1:9093,k2:9093")
    assert kw["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert kw.get("security_protocol", "PLAINTEXT") == protocol
    assert isinstance(kw.get("ssl_context"), ssl.SSLContext) is tls
    if tls:
        assert kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
        assert kw["ssl_context"].check_hostname
    if sasl:
        assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
            "SCRAM-SHA-512", "svc", SECRET)
    else:
        assert "sasl_mechanism" not in kw and "sasl_plain_password" not in kw


def test_kafka_ca_file_is_used():
    cafile = Path(ssl.get_default_verify_paths().cafile or "")
    if not cafile.is_file():
        certifi = pytest.importorskip("certifi")
        cafile = Path(certifi.where())
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cafile)
    ctx = client_kwargs(settings, "k:9093")["ssl_context"]
    assert ctx.cert_store_stats()["x509_ca"] > 10


@pytest.mark.parametrize("protocol, kind, wire", [
    ("SASL_SSL", "SASLCredentials", "SASL_SSL"),
    ("SASL_PLAINTEXT", "SASLCredentials", "SASL_PLAINTEXT"),
    ("SSL", "SSLCredentials", "SSL"),
    ("PLAINTEXT", "NoneType", None),
])
def test_the_worker_app_gets_the_same_tls_and_sasl(protocol, kind, wire):
    """create_app builds the worker's Faust app from the settings: check it in a child process
    (no broker needed to build it)."""
    env = {**os.environ, "REVIEWBUS_KAFKA": "127.0.0.1:1",
           "REVIEWBUS_KAFKA_SECURITY_PROTOCOL": protocol,
           "REVIEWBUS_KAFKA_SASL_MECHANISM": "PLAIN", "REVIEWBUS_KAFKA_SASL_USERNAME": "svc",
           "REVIEWBUS_KAFKA_SASL_PASSWORD": SECRET}
    code = ("from agents.settings import load_settings; from streams.app import faust_app; "
            "app = faust_app(load_settings(), '127.0.0.1:1'); c = app.conf.broker_credentials; "
            "import json; print(json.dumps([type(c).__name__, "
            "getattr(getattr(c, 'protocol', None), 'value', None), "
            "getattr(c, 'username', None)]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    got_kind, got_wire, user = json.loads(out.strip().splitlines()[-1])
    assert (got_kind, got_wire) == (kind, wire)
    if kind == "SASLCredentials":
        assert user == "svc"


def test_clickhouse_credentials_are_never_in_errors_or_names():
    dsn = f"http://reviewbus:{SECRET}@127.0.0.1:1/db"
    assert SECRET not in redact_dsn(dsn) and "***" in redact_dsn(dsn)
    for url, password in ((dsn, None), ("http://reviewbus@127.0.0.1:1/db", SecretStr(SECRET))):
        with pytest.raises(StoreError) as err:
            Store.connect(url, password)
        # Neither the message nor the whole chained traceback a log line would show.
        assert SECRET not in "".join(traceback.format_exception(err.value))
        assert "127.0.0.1:1" in str(err.value)


def test_input_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("REVIEWBUS_LIMIT_MAX_FILES", "7")
    monkeypatch.setenv("REVIEWBUS_LIMIT_MAX_DIFF_CHARS", "1234")
    limits = Limits()
    assert (limits.max_files, limits.max_diff_chars) == (7, 1234)


# ---- the analyser subprocess ---------------------------------------------------------------


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    return work


def change(files: dict[str, str]) -> NormalizedChange:
    return NormalizedChange(repo="evil/repo", sha="abcdef12", message="x", diff="",
                            files=[ChangedFile(path=p, status="added", content=c)
                                   for p, c in files.items()])


def backend(**params) -> AnalyzerBackend:
    return AnalyzerBackend(VersionSpec(id="an-sec", backend="analyzers", params=params))


@pytest.mark.skipif(not analyzers.no_network(),
                    reason="no network namespace can be created here (see README: Security)")
def test_the_analyser_sees_no_network(monkeypatch, tmp_path, private_tmp):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    report = tmp_path / "net.json"
    script = (
        "import json, socket\n"
        "out = {}\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3); out['tcp'] = 'ok'\n"
        "except OSError as e:\n    out['tcp'] = str(e)\n"
        "try:\n    socket.getaddrinfo('pypi.org', 443); out['dns'] = 'ok'\n"
        "except OSError as e:\n    out['dns'] = str(e)\n"
        f"open({str(report)!r}, 'w').write(json.dumps(out))\n"
        "print('[]')\n")
    monkeypatch.setattr(analyzers.ruff, "ruff_argv", lambda: [sys.executable, "-c", script])
    try:
        asyncio.run(backend(bandit=False).infer([change({"a.py": "x = 1\n"})]))
    finally:
        server.close()
    seen = json.loads(report.read_text())
    assert seen["tcp"] != "ok" and seen["dns"] != "ok"  # not even the worker's own loopback


PATHOLOGICAL = {
    "nested.py": "x = " + "(" * 3000 + "1" + ")" * 3000 + "\n",
    "chain.py": "x = " + " + ".join(["1"] * 60_000) + "\n",
    "lambdas.py": "f = " + "lambda: " * 2000 + "0\n",
    "deep_blocks.py": "".join("    " * i + "if x:\n" for i in range(150)) + "    " * 150 + "pass\n",
}


def test_pathological_python_is_bounded_and_answers(private_tmp):
    """Code that makes parsers recurse or crawl: each run ends with findings or a BackendError
    (never a hang, never a crash of the caller), within the tool timeout."""
    b = backend(tool_timeout_s=20, max_file_bytes=2_000_000)
    for name, text in PATHOLOGICAL.items():
        try:
            [prediction] = asyncio.run(b.infer([change({name: text})]))
        except BackendError as exc:
            assert "timed out" in str(exc) or "failed" in str(exc) or "output" in str(exc)
        else:
            assert all(f.path == name for f in prediction.findings)


def test_output_is_bounded_on_a_file_of_many_megabytes(private_tmp):
    # 3 MB of one-line statements, each a finding: far more JSON than the tools may return.
    text = "import os, sys\n" * 200_000
    b = backend(max_file_bytes=4_000_000, bandit=False, ruff_select=["E", "F"])
    with pytest.raises(BackendError, match="output over"):
        asyncio.run(b.infer([change({"big.py": text})]))

"""The worker-hosted store's token (issue: several workers share one store over HTTP; no
process on the machine may insert rows or run SQL without the token in <home>/store.token)."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request

import pytest

from agents.errors import StoreError
from agents.settings import Settings
from infra.clickhouse.auth import TOKEN_FILE, ensure_token, read_token
from infra.store import RemoteStore, Store, StoreUnauthorized, open_store

from .served_store import ServedStore
from .test_store import result


def test_token_is_random_private_and_stable(tmp_path):
    a, b = ensure_token(tmp_path / "a"), ensure_token(tmp_path / "b")
    assert a != b and len(a) >= 40
    path = tmp_path / "a" / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(tmp_path / "a") == a == read_token(tmp_path / "a")
    path.chmod(0o644)  # loosened by hand: tightened again, same token
    assert ensure_token(tmp_path / "a") == a
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")  # emptied: a fresh one
    assert ensure_token(tmp_path / "a") not in ("", a)
    assert read_token(tmp_path / "none") is None


def _post(url: str, path: str, body: dict, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(tmp_path):
    settings = Settings(home=tmp_path / "home")
    owner = open_store(settings)  # the owner (the worker) creates the token
    assert isinstance(owner, Store)
    try:
        with ServedStore(owner, settings.home, worker_json=True) as url:
            yield settings, owner, url
    finally:
        owner.close()


def test_without_the_token_nothing_is_inserted_or_queried(served):
    settings, owner, url = served
    token = read_token(settings.home)
    assert token
    event = result()
    insert = {"events": [{"type": type(event).__name__, "json": event.model_dump_json()}]}
    query = {"sql": "SELECT count() FROM interactions FINAL"}
    for given, status in ((None, 401), ("", 401), ("wrong-" + token, 403), (token[:-1], 403)):
        assert _post(url, "/store/insert", insert, given)[0] == status
        code, body = _post(url, "/store/query", query, given)
        assert code == status and "rows" not in body
        assert token not in json.dumps(body)
    assert owner.query("SELECT count() FROM interactions FINAL").rows == [[0]]
    # A scheme other than Bearer is no token either.
    request = urllib.request.Request(url + "/store/query", data=json.dumps(query).encode(),
                                     method="POST", headers={"Authorization": f"Basic {token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401

    assert _post(url, "/store/insert", insert, token) == (200, {"written": 4})
    assert _post(url, "/store/query", query, token) == (200, {"columns": ["count()"], "rows": [[1]]})


def test_the_client_reads_the_token_from_the_same_home(served, tmp_path):
    settings, owner, url = served
    remote = open_store(settings)  # the directory is held: the worker-hosted store, with token
    assert isinstance(remote, RemoteStore)
    assert remote.insert_events([result()]) == 4
    assert remote.query("SELECT count() FROM interactions FINAL").rows == [[1]]
    with pytest.raises(StoreUnauthorized, match="HTTP 403"):
        RemoteStore(url, token="not-it").insert_events([result(request_id="r9")])
    with pytest.raises(StoreError, match="HTTP 401"):
        RemoteStore(url).query("SELECT 1")
    # A client pointed at another home (another token) is refused with a clear line.
    other = Settings(home=tmp_path / "elsewhere", clickhouse=settings.resolved_clickhouse())
    (other.home).mkdir()
    (other.home / "worker.json").write_text(json.dumps({"web_url": url}))
    ensure_token(other.home)
    with pytest.raises(StoreUnauthorized, match="wrong store token"):
        open_store(other)
    assert owner.query("SELECT count() FROM interactions FINAL").rows == [[1]]


def test_a_rotated_token_takes_effect_without_a_restart(served):
    settings, _, url = served
    old = read_token(settings.home)
    (settings.home / TOKEN_FILE).unlink()
    new = ensure_token(settings.home)
    assert _post(url, "/store/query", {"sql": "SELECT 1"}, old)[0] == 403
    assert _post(url, "/store/query", {"sql": "SELECT 1"}, new)[0] == 200


def test_a_host_whose_store_is_down_says_retry_and_the_remote_store_raises_unavailable(served):
    """The host's outage (here its fault file) reaches another worker as StoreUnavailable,
    which the sink holds and retries, never as a data error it would dead-letter row by row;
    so does a host whose store is not open yet (503)."""
    import asyncio

    from infra.clickhouse.served import serve_store_request
    from infra.store import StoreUnavailable

    settings, owner, url = served
    client = open_store(settings)
    assert isinstance(client, RemoteStore)
    owner.fault_file = settings.home / "down"
    owner.fault_file.write_text("")
    with pytest.raises(StoreUnavailable, match="fault injection"):
        client.insert_events([result(request_id="r-down")])
    owner.fault_file.unlink()
    assert client.insert_events([result(request_id="r-up")]) == 4
    with pytest.raises(StoreError) as bad:  # a data error stays one
        client.insert_event_rows(_rows_with_source(b'{"not": "a result"}'))
    assert not isinstance(bad.value, StoreUnavailable)
    status, body = asyncio.run(serve_store_request(
        None, "insert", authorization=f"Bearer {read_token(settings.home)}", body=b"{}",
        home=settings.home))
    assert status == 503 and body["retry"] is True


def _rows_with_source(source: bytes):
    from infra.event_rows import EventRows

    rows = EventRows()
    rows.add(result(request_id="r-bad"), source)
    return rows

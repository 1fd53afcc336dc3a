"""`reviewbus up --detach` supervises its worker (streams/supervisor.py): a worker killed with
`kill -9` is restarted and `status` counts it; a worker that keeps dying at start-up is given
up on and `status` says why; the supervisor's restarts coexist with the worker's own
crash-loop quarantine; `down` leaves no process behind. Real processes, real embedded broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agents.settings import Settings
from infra.procs import pid_alive, read_json
from infra.store import StoreLock
from streams.cli import main as cli

from .conftest import FAST_REJOIN, isolate_env

pytestmark = pytest.mark.integration

FAKE = """task: code-review
versions:
  - id: st
    backend: fake
    initial_state: stable
    params: {label: feature, findings: 1}
"""
CRASHY = FAKE + """  - id: crashy
    backend: fake
    initial_state: shadow
    params: {mode: exit, exit_code: 139}
quarantine: {crash_loop_restarts: 2, crash_loop_window_s: 600, poison_after_crashes: 2}
rotation: {interval_s: 3600}
inference: {batch_size: 1, batch_wait_s: 0.01}
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    home = isolate_env(monkeypatch, tmp_path / "home", "sv")
    config = tmp_path / "versions.yaml"
    config.write_text(FAKE)
    monkeypatch.setenv("REVIEWBUS_CONFIG", str(config))
    monkeypatch.setenv("REVIEWBUS_PARTITIONS", "2")
    monkeypatch.setenv("REVIEWBUS_SUPERVISOR_BACKOFF_INITIAL_S", "0.2")
    monkeypatch.setenv("REVIEWBUS_SUPERVISOR_BACKOFF_MAX_S", "1")
    monkeypatch.setenv("REVIEWBUS_SUPERVISOR_STOP_GRACE_S", "15")
    for name, value in FAST_REJOIN.items():
        monkeypatch.setenv(name, value)
    return home


def status_json(capsys) -> dict:
    capsys.readouterr()
    assert cli(["status", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def processes_of(home: Path) -> list[int]:
    """Every process (but this one) started with REVIEWBUS_HOME=home: what `down` must stop."""
    needle = f"REVIEWBUS_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_restarted(home: Path, old_pid: int, timeout: float = 120.0) -> dict:
    """supervisor.json names a new, alive worker pid and that worker is healthy."""
    from streams.services.stack import worker_health

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup = read_json(home / "supervisor.json") or {}
        w = (sup.get("workers") or [{}])[0]
        info = read_json(home / "worker.json")
        if (w.get("alive") and w.get("pid") != old_pid and info
                and info.get("pid") == w.get("pid")):
            health = worker_health(info)
            if health and health.get("status") == "ok":
                return info
        time.sleep(0.3)
    raise AssertionError(f"no healthy new worker within {timeout} s: {sup}\n"
                         + (home / "supervisor.log").read_text(errors="replace")[-3000:])


def test_a_worker_killed_with_sigkill_is_restarted_and_counted(env, capsys):
    assert cli(["up", "--detach"]) == 0
    pids: set[int] = set()
    try:
        out = capsys.readouterr().out
        assert "reviewbus is up" in out and "supervisor pid" in out
        sup, worker, broker = (read_json(env / f) for f in
                               ("supervisor.json", "worker.json", "broker.json"))
        pids |= {sup["pid"], worker["pid"], broker["pid"]}
        assert sup["workers"][0]["pid"] == worker["pid"]
        stat = Path(f"/proc/{worker['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == sup["pid"]  # the supervisor is the worker's parent
        before = status_json(capsys)
        assert before["supervisor"]["running"] and before["workers"][0]["restarts"] == 0
        assert before["worker"]["status"] == "ok" and before["workers"][0]["alive"]

        os.kill(worker["pid"], signal.SIGKILL)
        new = wait_restarted(env, worker["pid"])
        pids.add(new["pid"])
        assert not pid_alive(worker["pid"])

        status = status_json(capsys)
        w = status["workers"][0]
        assert (w["pid"], w["alive"], w["restarts"]) == (new["pid"], True, 1)
        assert w["last_exit"]["reason"] == "killed by SIGKILL"
        assert w["last_exit"]["code"] == -9 and w["last_exit"]["pid"] == worker["pid"]
        assert w["uptime_s"] >= 0 and status["supervisor"]["uptime_s"] >= w["uptime_s"]
        assert status["supervisor"]["pid"] == sup["pid"] and not status["supervisor"]["gave_up"]
        assert status["worker"]["pid"] == new["pid"] and status["worker"]["restarts"] == 1
        assert status["worker"]["status"] == "ok"

        assert cli(["status"]) == 0
        text = capsys.readouterr().out
        assert f"supervisor: pid {sup['pid']}" in text
        assert f"worker 0: pid {new['pid']} alive" in text and "1 restart," in text
        assert "last exit: killed by SIGKILL" in text
        log = (env / "supervisor.log").read_text()
        assert f"worker 0 (pid {worker['pid']}) died" in log and "killed by SIGKILL" in log

        # A second `up --detach` reports the running supervisor and starts nothing.
        assert cli(["up", "--detach"]) == 0
        assert "already running: supervisor pid" in capsys.readouterr().out
        assert read_json(env / "supervisor.json")["pid"] == sup["pid"]
        assert log.count("supervisor started") == 1
    finally:
        assert cli(["down"]) == 0
    assert "stopped: supervisor, worker, broker" in capsys.readouterr().out
    assert not any(pid_alive(p) for p in pids)
    assert processes_of(env) == []
    assert not (env / "supervisor.json").exists() and not (env / "worker.json").exists()
    assert "worker 0 (pid" in (env / "supervisor.log").read_text().split("SIGTERM received")[1]


def test_a_worker_that_keeps_dying_is_given_up_on_and_status_says_why(env, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("REVIEWBUS_SUPERVISOR_CRASH_LOOP_DEATHS", "3")
    monkeypatch.setenv("REVIEWBUS_SUPERVISOR_CRASH_LOOP_WINDOW_S", "300")
    # This process holds the store: every worker exits 2 at start-up (StoreBusy).
    lock = StoreLock(Path(Settings().resolved_clickhouse().removeprefix("chdb://")))
    assert lock.acquire()
    try:
        assert cli(["up", "--detach"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("reviewbus: the supervisor gave up: worker 0 died 3 times "
                              "within 300 s (crash loop: limit 3)")
        assert "exit code 2" in err and "is held by process" in err
        status = status_json(capsys)
        sup, w = status["supervisor"], status["workers"][0]
        assert not sup["running"] and "died 3 times within 300 s" in sup["gave_up"]
        assert (w["alive"], w["state"], w["restarts"]) == (False, "gave_up", 2)
        assert w["last_exit"]["reason"] == "exit code 2"
        assert "is held by process" in w["last_exit"]["log"]
        assert not status["worker"]["running"]
        assert cli(["status"]) == 0
        assert "supervisor: gave up: worker 0 died 3 times" in capsys.readouterr().out
        log = (env / "supervisor.log").read_text()
        assert log.count("restarting in") == 2 and "giving up" in log
    finally:
        lock.release()
        assert cli(["down"]) == 0
    assert processes_of(env) == []
    assert not (env / "supervisor.json").exists()


def test_restarts_coexist_with_the_workers_own_crash_loop_quarantine(env, capsys, tmp_path,
                                                                      monkeypatch):
    """A version that kills the worker: the supervisor restarts it, the restarted worker
    attributes the deaths and quarantines the version, and the worker then stays up."""
    from infra.kafka import produce_all, start_producer
    from schemas import ChangedFile, CommitEvent
    from streams import names

    (tmp_path / "versions.yaml").write_text(CRASHY)
    assert cli(["up", "--detach"]) == 0
    try:
        settings = Settings()
        bootstrap = read_json(env / "broker.json")["address"]
        events = [CommitEvent(repo="acme/c", sha=f"{i:08x}", message=f"feat: c {i}",
                              event_id=f"sv-{i}",
                              files=[ChangedFile(path="a.py", status="added",
                                                 content="a = 1\n")])
                  for i in range(3)]

        async def publish() -> None:
            producer = await start_producer(settings, bootstrap)
            try:
                await produce_all(producer, names.topic(settings, "commits"),
                                  ((e.repo.encode(), e.model_dump_json().encode())
                                   for e in events))
            finally:
                await producer.stop()

        asyncio.run(publish())
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = status_json(capsys)
            if status.get("versions", {}).get("crashy") == "quarantined":
                break
            assert not status["supervisor"]["gave_up"], status["supervisor"]
            time.sleep(1)
        else:
            raise AssertionError(f"never quarantined: {status}")
        w = status["workers"][0]
        assert 2 <= w["restarts"] <= 3 and w["last_exit"]["reason"] == "exit code 139"
        assert w["alive"] and status["supervisor"]["running"]
        time.sleep(3)  # and it stays up
        assert status_json(capsys)["workers"][0]["restarts"] == w["restarts"]
    finally:
        assert cli(["down"]) == 0
    assert processes_of(env) == []


def test_a_stale_supervisor_file_is_reported_and_removed(env, capsys):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    env.mkdir(parents=True, exist_ok=True)
    (env / "supervisor.json").write_text(json.dumps({
        "pid": gone.pid, "started_at": time.time() - 60, "gave_up": None, "stopped": None,
        "workers": [{"index": 0, "pid": gone.pid, "alive": True, "state": "running",
                     "started_at": time.time() - 50, "restarts": 4, "last_exit": None}]}))
    status = status_json(capsys)
    assert status["supervisor"]["running"] is False
    assert status["supervisor"]["stopped"] == "not running (stale supervisor.json)"
    w = status["workers"][0]
    assert (w["alive"], w["pid"], w["state"], w["restarts"]) == (False, None, "stopped", 4)
    assert cli(["status"]) == 0
    assert "supervisor: not running (stale supervisor.json)" in capsys.readouterr().out
    assert cli(["down"]) == 0
    assert not (env / "supervisor.json").exists()


def test_up_with_two_workers_shares_partitions_and_survives_a_kill(env, capsys, tmp_path):
    """`up --detach --workers 2` as a user runs it: two supervised workers of one group split
    the partitions, one leads, one hosts the store; a commit is reviewed; a worker killed with
    `kill -9` is restarted and counted, the other is not, and the pair reviews again; `down`
    stops them all."""
    from infra.gitsource import commit_events
    from streams.services.bus import submit

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "ci@example.com"],
                 ["config", "user.name", "CI"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    for i in range(2):
        (repo / f"f{i}.py").write_text(f"x = {i}\n")
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
        subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", f"feat: f{i}"], check=True)

    assert cli(["up", "--detach", "--workers", "2"]) == 0
    pids: set[int] = set()
    try:
        capsys.readouterr()

        def membership_settled(status: dict) -> bool:
            ws = status["workers"]
            return (len(ws) == 2 and all(w["alive"] and w["partitions"] for w in ws)
                    and status["leader"] is not None)

        deadline = time.monotonic() + 120
        status = status_json(capsys)
        while not membership_settled(status) and time.monotonic() < deadline:
            time.sleep(1)
            status = status_json(capsys)
        assert membership_settled(status), status["workers"]
        ws = status["workers"]
        pids |= {w["pid"] for w in ws} | {status["supervisor"]["pid"]}
        commits = [{p for p in w["partitions"] if p.split(":")[0].endswith(".commits")}
                   for w in ws]
        # the commits topic's two partitions, one each (the group split them)
        assert commits[0].isdisjoint(commits[1]) and len(commits[0] | commits[1]) == 2, ws
        assert sum(w["hosts_store"] for w in ws) == 1
        assert status["leader"]["pid"] in {w["pid"] for w in ws}

        settings = Settings()
        results = asyncio.run(submit(settings, commit_events(repo, "HEAD"),
                                     wait=True, timeout=90))
        assert [r.version_id for r in results] == ["st"]

        victim = next(w for w in ws if not w["hosts_store"])
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = status_json(capsys)
            again = next(w for w in status["workers"] if w["index"] == victim["index"])
            if again["alive"] and again["pid"] != victim["pid"] and again["partitions"]:
                break
            time.sleep(1)
        assert again["restarts"] == 1 and again["last_exit"]["reason"] == "killed by SIGKILL"
        other = next(w for w in status["workers"] if w["index"] != victim["index"])
        assert other["restarts"] == 0 and other["pid"] in pids
        pids.add(again["pid"])
        results = asyncio.run(submit(settings, commit_events(repo, "HEAD~1"),
                                     wait=True, timeout=90))
        assert [r.version_id for r in results] == ["st"]
    finally:
        stopped = cli(["down"])
    assert stopped == 0
    assert not any(pid_alive(p) for p in pids)
    assert processes_of(env) == []

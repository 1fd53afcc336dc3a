"""`python -m streams.supervisor`: what `reviewbus up --detach` leaves running.

It is the parent of the worker(s), so it sees each real exit status. Like systemd's
`Restart=on-failure`, a worker that fails (non-zero exit, death by signal) is restarted after
a capped exponential backoff, and a crash loop (N deaths within M seconds) stops the restarts
(agents/restart_policy.py decides both). Every start, death and restart goes to
<home>/supervisor.log with the exit reason and the worker log's last line; the state goes to
<home>/supervisor.json, which `reviewbus status` reads. SIGTERM (from `reviewbus down`) stops
the workers (SIGTERM, a grace period, then SIGKILL) and then the supervisor.

Kept free of Faust: it only imports settings, the restart policy and the process helpers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from agents.restart_policy import RestartPolicy, decide, exit_reason, is_failure
from agents.settings import Settings
from infra.procs import pid_alive, read_json, write_json

SUPERVISOR_FILE = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"
log = logging.getLogger("reviewbus.supervisor")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def worker_log(home: Path, index: int) -> Path:
    return home / ("worker.log" if index == 0 else f"worker-{index}.log")


def last_line(path: Path, max_bytes: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    # Faust's spinner leaves terminal escapes and backspaces in the log: drop them.
    line = CONTROL.sub("", ANSI.sub("", lines[-1])).strip() if lines else ""
    return line[:500] or "(empty log)"


def policy_of(settings: Settings) -> RestartPolicy:
    return RestartPolicy(
        backoff_initial_s=settings.supervisor_backoff_initial_s,
        backoff_max_s=max(settings.supervisor_backoff_max_s,
                          settings.supervisor_backoff_initial_s),
        crash_loop_deaths=settings.supervisor_crash_loop_deaths,
        crash_loop_window_s=settings.supervisor_crash_loop_window_s)


def is_supervisor(pid: int) -> bool:
    """Alive and still a supervisor (not a recycled pid), as far as /proc can tell."""
    if not pid or not pid_alive(pid):
        return False
    try:
        return b"streams.supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


def supervisor_state(home: Path) -> dict | None:
    """<home>/supervisor.json with `running` (is that supervisor alive now), or None."""
    state = read_json(home / SUPERVISOR_FILE)
    if state is None:
        return None
    state["running"] = is_supervisor(int(state.get("pid") or 0))
    return state


class Slot:
    """One worker the supervisor keeps running: its process, deaths and state."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.state = "starting"  # running | backoff | stopped | gave_up
        self.started_at: float | None = None
        self.restarts = 0
        self.deaths: tuple[float, ...] = ()
        self.last_exit: dict | None = None
        self.next_start_at: float | None = None
        self.gave_up: str | None = None

    def as_json(self) -> dict:
        return {"index": self.index, "pid": self.proc.pid if self.proc else None,
                "alive": self.proc is not None and self.proc.poll() is None,
                "state": self.state, "started_at": self.started_at,
                "restarts": self.restarts, "deaths_in_window": len(self.deaths),
                "next_start_at": self.next_start_at, "last_exit": self.last_exit,
                "gave_up": self.gave_up}


class Supervisor:
    def __init__(self, settings: Settings, count: int = 1,
                 command: list[str] | None = None) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.policy = policy_of(settings)
        self.command = command or [sys.executable, "-m", "streams.worker"]
        self.slots = [Slot(i) for i in range(count)]
        self.started_at = time.time()
        self.stopping = False
        self.stopped: str | None = None

    def save(self) -> None:
        gave_up = [s.gave_up for s in self.slots if s.gave_up]
        write_json(self.home / SUPERVISOR_FILE, {
            "pid": os.getpid(), "started_at": self.started_at,
            "policy": vars(self.policy) | {"stop_grace_s": self.settings.supervisor_stop_grace_s},
            "log": str(self.home / SUPERVISOR_LOG),
            "workers": [s.as_json() for s in self.slots],
            "gave_up": "; ".join(gave_up) or None, "stopped": self.stopped})

    def spawn(self, slot: Slot) -> None:
        # Which of the N workers this is: the worker's web port and announce file follow it.
        env = dict(os.environ, REVIEWBUS_HOME=str(self.home),
                   REVIEWBUS_WORKER_INDEX=str(slot.index),
                   REVIEWBUS_WORKERS=str(len(self.slots)))
        with open(worker_log(self.home, slot.index), "ab") as out:
            slot.proc = subprocess.Popen(self.command, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        slot.state, slot.started_at, slot.next_start_at = "running", time.time(), None
        log.info("worker %d started: pid %d (restarts so far: %d)",
                 slot.index, slot.proc.pid, slot.restarts)

    def reap(self, slot: Slot, now: float) -> None:
        """slot.proc has exited: record why, then restart later, stop, or give up."""
        assert slot.proc is not None and slot.started_at is not None
        pid, rc = slot.proc.pid, slot.proc.returncode
        reason, tail = exit_reason(rc), last_line(worker_log(self.home, slot.index))
        uptime = now - slot.started_at
        slot.last_exit = {"at": now, "pid": pid, "code": rc, "reason": reason,
                          "uptime_s": round(uptime, 1), "log": tail}
        slot.proc = None
        if self.stopping:
            slot.state = "stopped"
            log.info("worker %d (pid %d) stopped: %s", slot.index, pid, reason)
            return
        if not is_failure(rc):
            slot.state = "stopped"
            log.warning("worker %d (pid %d) exited cleanly (%s) after %.1f s; not restarted "
                        "(on-failure)", slot.index, pid, reason, uptime)
            return
        decision = decide(self.policy, (*slot.deaths, now), now)
        slot.deaths = decision.recent
        if not decision.restart:
            slot.state = "gave_up"
            slot.gave_up = (f"worker {slot.index} {decision.reason}; last: {reason}: {tail}; "
                            "not restarting it")
            log.error("worker %d (pid %d) died after %.1f s: %s; last log line: %s. "
                      "It %s: giving up (see %s)", slot.index, pid, uptime, reason, tail,
                      decision.reason, worker_log(self.home, slot.index))
            return
        slot.state, slot.next_start_at = "backoff", now + decision.delay_s
        log.warning("worker %d (pid %d) died after %.1f s: %s; last log line: %s; "
                    "restarting in %.1f s (death %d within %g s)", slot.index, pid, uptime,
                    reason, tail, decision.delay_s, len(decision.recent),
                    self.policy.crash_loop_window_s)

    def on_signal(self, signum: int, _frame) -> None:
        if not self.stopping:
            log.info("%s received: stopping the workers", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("supervisor started: pid %d, %d worker(s), %s", os.getpid(), len(self.slots),
                 self.policy)
        for slot in self.slots:
            self.spawn(slot)
        self.save()
        while not self.stopping:
            now, changed = time.time(), False
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    self.reap(slot, now)
                    changed = True
                elif slot.state == "backoff" and slot.next_start_at <= now and not self.stopping:
                    slot.restarts += 1
                    self.spawn(slot)
                    changed = True
            if changed:
                self.save()
            if not any(s.state in ("running", "backoff") for s in self.slots):
                break
            time.sleep(self.settings.supervisor_poll_s)
        signalled = self.stopping
        self.stop_workers()
        gave_up = [s for s in self.slots if s.gave_up]
        self.stopped = ("stopped by a signal" if signalled
                        else "gave up" if gave_up else "every worker exited cleanly")
        self.save()
        log.info("supervisor exits: %s", self.stopped)
        return 1 if gave_up and not signalled else 0

    def stop_workers(self) -> None:
        self.stopping = True  # what exits now is a stop, not a death
        running = [s for s in self.slots if s.proc is not None]
        for slot in running:
            if slot.proc.poll() is None:
                log.info("worker %d (pid %d): SIGTERM", slot.index, slot.proc.pid)
                slot.proc.terminate()
        deadline = time.monotonic() + self.settings.supervisor_stop_grace_s
        for slot in running:
            try:
                slot.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) still running after %g s: SIGKILL", slot.index,
                            slot.proc.pid, self.settings.supervisor_stop_grace_s)
                slot.proc.kill()
                slot.proc.wait()
            self.reap(slot, time.time())
        for slot in self.slots:
            if slot.state == "backoff":
                slot.state, slot.next_start_at = "stopped", None


def main(argv: list[str] | None = None) -> int:
    from agents.settings import load_settings

    args = sys.argv[1:] if argv is None else argv
    count = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    return supervise(load_settings(), count)


def supervise(settings: Settings, count: int) -> int:
    """Run a supervisor of `count` workers in this process until it stops (`reviewbus up
    --workers N` without --detach runs this in the foreground)."""
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s supervisor: %(message)s")
    # One supervisor per home: the lock is the kernel's, so a killed one never leaves it held.
    lock = open(home / "supervisor.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another supervisor already runs for %s; not starting", home)
        return 3
    return Supervisor(settings, count).run()


if __name__ == "__main__":
    sys.exit(main())

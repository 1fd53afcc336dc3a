"""The warm bandit process: run as `python -I <this file>` by warm_pool.WarmBandit, never imported.

One JSON request per line on stdin ({argv, cwd, home, cpu_s}); bandit runs in this process
with that argv (which names its report file), and one JSON line answers ({rc, stderr}).
`-I` keeps the analysed tree off sys.path (no cwd, no script directory, no PYTHONPATH, no user
site), so only the standard library, bandit and this file's code ever run here. The CPU limit
is re-armed per request: the hard limit set at start caps the process's whole life.
Only the standard library and bandit are imported: this file must not need `agents`.
"""

import importlib
import io
import json
import os
import resource
import sys


class Sink(io.StringIO):
    name = "<stdout>"  # bandit's json formatter compares its file's name with stdout's


def _rearm_cpu(cpu_s: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(usage.ru_utime + usage.ru_stime) + cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))


def main() -> None:
    bandit_main = importlib.import_module("bandit.cli.main")
    os.chdir("/")
    reply = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        _rearm_cpu(int(req["cpu_s"]))
        os.environ["HOME"] = req["home"]
        err = io.StringIO()
        sys.argv = ["bandit", *req["argv"]]
        sys.stdout, sys.stderr = Sink(), err
        code = 0
        try:
            os.chdir(req["cwd"])
            bandit_main.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - reported to the worker, which kills us
            code = 70
            err.write(repr(exc))
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            os.chdir("/")
        reply.write(json.dumps({"rc": code, "stderr": err.getvalue()[-65536:]}) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()

"""Run many `clipsearch` command lines cheaply: one process loads the libraries once, then each
command line runs `clipsearch.cli.main()` (what the console script and `python -m clipsearch.cli`
call) in a fork of it, in its own working folder, with its own stdout and stderr files.

Usage: python tests/cli_forks.py < cases.json > results.json, where cases.json is a list of
{"id", "args", "cwd", "logs"} and each result is {"id", "code", "stdout", "stderr", "seconds"}.
Without the fork, a case that reaches the training code would pay ~10-20 s of imports.
"""

import json
import os
import signal
import sys
import time
import traceback

CASE_SECONDS = 120


def run_case(case: dict) -> int:
    """In the forked child: the case's folder, its output files, its argv; then main()."""
    signal.alarm(CASE_SECONDS)  # a case that hangs is ended (and fails) rather than holding up the rest
    os.chdir(case["cwd"])
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(os.path.join(case["logs"], name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
    sys.argv = ["clipsearch", *case["args"]]
    from clipsearch.cli import main

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would do with an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run_all(cases: list[dict]) -> list[dict]:
    results = []
    for case in cases:
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(run_case(case))
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        read = {name: open(os.path.join(case["logs"], name), encoding="utf-8", errors="replace").read()
                for name in ("stdout", "stderr")}
        results.append({"id": case["id"], "code": code, **read, "seconds": time.perf_counter() - started})
    return results


if __name__ == "__main__":
    import clipsearch.cli  # noqa: F401  the libraries every case would load, paid once
    import clipsearch.train  # noqa: F401

    json.dump(run_all(json.load(sys.stdin)), sys.stdout)

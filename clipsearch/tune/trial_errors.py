"""An errored trial's reason in one line, for trials.csv's `error` and the driver's progress lines.

A trial's error (Tune's `trial.get_error()`, its error.txt) holds a "Failure # N" section per
failed attempt, each the exception and traceback; the last attempt's is the reason. Most are the trainable's own exception, and its type and message are the reason. When Ray itself
killed the trial's worker, that line says little ("Caught unexpected exception"): Ray's text under
it says why, and that is what is kept. Pure text handling: no Ray imported.
"""

from __future__ import annotations

import re

OUT_OF_MEMORY = "out of memory"
#: Ray's memory monitor (raylet) killing a worker: ray.exceptions.OutOfMemoryError
_RAY_OOM = re.compile(r"OutOfMemoryError|killed due to the node running low on memory")
_WORKER_USED = re.compile(r"actual memory used=([\d.]+\s*[KMGT]?B)")
_NODE_USED = re.compile(r"Memory on the node \(IP: [^,]+, ID: \w+\) was ([\d.]+\s*[KMGT]?B) used / "
                        r"([\d.]+\s*[KMGT]?B) limit")
_THRESHOLD = re.compile(r"exceeded threshold of \d+B \(([\d.]+%)")
#: Ray losing the trial's worker process or its node (a raylet killed, a host gone): the actor's
#: calls fail with "The actor ... is unavailable ... Socket closed", or the actor or node died
_WORKER_LOST = re.compile(r"ActorUnavailableError|ActorDiedError|NodeDiedError|The actor \w+ is unavailable|"
                          r"The actor died|RPC error: Socket closed")
WORKER_LOST = "worker lost (its process or its node stopped)"
_ATTEMPT = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)$", re.MULTILINE)  # Trial.handle_error's header
_EXCEPTION = re.compile(r"^[\w.]+(Error|Exception|Fault)\b")
LIMIT = 500


def error_line(text: str | None) -> str:
    """The reason a trial errored, in one line of at most LIMIT characters: "out of memory: ..."
    with Ray's figures when its memory monitor killed the worker, "worker lost ...: Ray said ..."
    when Ray lost the worker or its node, else the last line that names an exception (its type
    and message), else the last line."""
    text = _ATTEMPT.split(str(text or ""))[-1]
    if _RAY_OOM.search(text):
        return _out_of_memory(text)[:LIMIT]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _EXCEPTION.match(line)]
    last = errors[-1] if errors else lines[-1] if lines else "error"
    if _WORKER_LOST.search(text):
        said = next((line for line in reversed(lines) if _WORKER_LOST.search(line)), last)
        return f"{WORKER_LOST}: Ray said {said}"[:LIMIT]
    return last[:LIMIT]


def _out_of_memory(text: str) -> str:
    worker, node, threshold = _WORKER_USED.search(text), _NODE_USED.search(text), _THRESHOLD.search(text)
    figures = [f"the trial's worker used {worker.group(1)}" if worker else "",
               f"the node {node.group(1)} of {node.group(2)}" if node else "",
               f"above the kill threshold of {threshold.group(1)} (RAY_memory_usage_threshold)" if threshold else ""]
    said = "; ".join(filter(None, figures))
    return f"{OUT_OF_MEMORY}: Ray's memory monitor killed the trial" + (f" ({said})" if said else "")

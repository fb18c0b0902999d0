"""A space file edited between a phase's start and its `--resume`: said, never mixed in.

A phase keeps what it runs in its phase.json (params with their ranges, constants, sampler,
scheduler, base) and a resume reads only that, so an edit to the file would change nothing
without a word: the user who widened a range and resumed would believe it widened. phase.json
also keeps the file's content as it was read (`space_document`), and a resume compares the file
with it:

- the file the phase started from, edited since: the phase goes on with the space it started
  with, and a `note:` line names what changed. It cannot take the edit: Tune brings back its
  searcher and every trial's config from its own snapshot, and the Optuna study holds the
  trials drawn from the old ranges (TPE reads a trial only under the distribution it was drawn
  from, so old and new ranges would each see a part of the history: the mix this avoids). And a
  resume after a crash should not fail on an edit meant for the next experiment.
- a file the command line names (`--space`, `--spaces`) that differs: refused (exit 2), since
  the user asked for a space the phase will not run.

Either way the fix is the same: a changed space is a new search (another --name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..errors import InputError

#: the changes a line names before "and N more"
SHOWN = 3


def space_document(path: str | Path) -> dict[str, Any]:
    """The space file's mapping as phase.json keeps it (JSON's types: what it reads back)."""
    return json.loads(json.dumps(read_yaml(path), default=str))


def space_changes(before: Any, after: Any, at: str = "") -> list[str]:
    """Each difference between two space documents, as `key: old -> new` (`added`, `removed`),
    keys dotted from the top (params.optimizer.lr.loguniform: [0.0001, 0.01] -> [1e-05, 0.01])."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in [*before, *(k for k in after if k not in before)]:
            where = f"{at}.{key}" if at else str(key)
            if key not in after:
                changes.append(f"{where}: removed (was {_shown(before[key])})")
            elif key not in before:
                changes.append(f"{where}: added ({_shown(after[key])})")
            else:
                changes += space_changes(before[key], after[key], where)
        return changes
    if before == after and type(before) is type(after):  # 1 and 1.0, 1 and true: a change in YAML
        return []
    return [f"{at or 'the file'}: {_shown(before)} -> {_shown(after)}"]


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)


def summary(changes: list[str]) -> str:
    shown = "; ".join(changes[:SHOWN])
    return shown + (f"; and {len(changes) - SHOWN} more" if len(changes) > SHOWN else "")


def check_space_on_resume(state: dict[str, Any], named: Path | None) -> None:
    """--resume of a phase whose space file changed since it started (see the module's
    docstring). `named`: the space file the command line names (--space, or --spaces' file for
    the phase), None when it names none. A phase.json from before `space_document`: no check."""
    recorded = state.get("space_document")
    if recorded is None:
        return
    phase, path = state["phase"], named or Path(state["space"])
    fix = "start another --name to search the edited space"
    if named is None:
        if not path.is_file():
            return  # gone: the phase never reads it again
        try:
            now = space_document(path)
        except InputError:
            print(f"note: {phase}: {path} no longer reads as a space file; the phase goes on with the space it "
                  f"started with (its phase.json)", file=sys.stderr)
            return
    else:
        now = space_document(path)  # not there, not YAML: the InputError of any bad space file
    changes = space_changes(recorded, now)
    if not changes:
        return
    if named is not None:
        raise InputError(f"{phase} started with another space ({summary(changes)})", where=str(path),
                         fix=f"resume without --space/--spaces: the phase goes on with the space it started with "
                             f"({state['space']}, kept in its phase.json); or {fix}")
    print(f"note: {phase}: {path} changed since the phase started ({summary(changes)}); the phase goes on "
          f"with the space it started with (kept in its phase.json); {fix}", file=sys.stderr)

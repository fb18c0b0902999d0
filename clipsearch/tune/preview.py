"""What a search would run, without running it: `clipsearch space check FILE` (the file loaded
and checked as its search loads it) and the search commands' `--dry-run` (every check the
command makes before Ray starts: each search's own prepare, which writes nothing), in the words
of clipsearch.tune.space_report. Ray is not started and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..results import PHASE_JSON, PHASES, read_json
from .classify import load_classify_spaces, prepare_classify
from .phases import Options, prepare, space_overrides
from .space import PHASES as KINDS
from .space import default_space_path, load_space
from .space_report import describe, describe_before, describe_plan
from .supcon import SPACE as SUPCON_SPACE
from .supcon import load_supcon_space, prepare_supcon


def space_file(path: Path | None, kind: str | None, quick: bool = False, overrides: list[str] | None = None) -> str:
    """`clipsearch space check`: the file (or, with none, the shipped space of `kind`, its _quick
    one with `quick`) loaded for `kind` (else the kind its name says: phase1_quick.yaml is
    phase 1's), with --set constants over its own, as its search loads it."""
    if path is not None and quick:
        raise InputError("--quick picks a shipped space file, and a FILE is given", where="--quick",
                         fix="drop --quick, or the FILE (then --phase picks the shipped file)")
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown phase {kind!r}", where="--phase", fix=f"use one of: {', '.join(KINDS)}")
    if path is None:
        if kind is None:
            raise InputError("no space file given", where="FILE", fix=f"give a FILE, or --phase ({', '.join(KINDS)}) "
                                                                      "for the shipped one")
        path = default_space_path(kind, quick)
    elif not path.is_file():
        raise InputError("file not found", where=str(path), fix="check the path")
    kind = kind or kind_of(path)
    opts = Options(space=path, overrides=list(overrides or []))
    if kind == "classify":
        spaces = load_classify_spaces(path, space_overrides(opts))
        return "\n\n".join(describe(space, title=f"{path}: classify, method {method} (Optuna search)")
                            for method, space in spaces.items())
    space = load_supcon_space(opts) if kind == SUPCON_SPACE else load_space(path, kind, space_overrides(opts))
    return describe(space)


def kind_of(path: Path) -> str:
    """The search a space file is for, from its name: PHASE.yaml or PHASE_quick.yaml."""
    stem = path.stem.removesuffix("_quick")
    if stem not in KINDS:
        raise InputError(f"cannot tell from the name {path.name!r} which search reads it", where=str(path),
                         fix=f"pass --phase with one of: {', '.join(KINDS)}")
    return stem


def phase(name: str, opts: Options) -> str:
    """One phase of the CLIP protocol (phase 2 and 3 need the earlier phase's results, as the
    command does)."""
    return describe_plan(prepare(name, opts))


def protocol(opts: Options) -> str:
    """The three phases as `clipsearch protocol` would run them: every space file checked first
    (as the protocol does), then each phase prepared whose inputs exist (phase 1; with --resume
    the phases before are finished), the others described from their file alone."""
    kept = {p: _state(opts, p) for p in PHASES} if opts.resume else dict.fromkeys(PHASES)
    for p in PHASES:
        if kept[p] is None:
            load_space(_space_path(p, opts), p, space_overrides(opts))
    parts, inputs_exist = [], True
    for p in PHASES:
        state = kept[p]
        if state is None and not inputs_exist:
            parts.append(describe_before(load_space(_space_path(p, opts), p, space_overrides(opts))))
            continue
        plan = prepare(p, Options(**{**vars(opts), "resume": state is not None, "space": None}))
        parts.append(describe_plan(plan))
        inputs_exist = bool(plan.state.get("finished"))
    return "\n\n".join(parts)


def classify(opts: Options, methods: list[str] | None = None) -> str:
    """Each method's search as `sweep classify` would run it."""
    return "\n\n".join(describe_plan(plan, "classify") for plan in prepare_classify(opts, methods))


def supcon(opts: Options) -> str:
    """The baselines, the sweep and its long run as `sweep supcon` would run them."""
    prepared = prepare_supcon(opts)
    if prepared.space is None:
        return describe_plan(prepared.sweep)
    return describe(prepared.space, title=f"supcon sweep: {Path(prepared.space.path).resolve()} -> {prepared.root}")


def _space_path(name: str, opts: Options) -> Path:
    return default_space_path(name, opts.quick, opts.spaces_dir)


def _state(opts: Options, name: str) -> dict[str, Any] | None:
    """The phase.json of a started phase (what --resume goes on with), else None."""
    path = (opts.results / opts.name / name).resolve() / PHASE_JSON
    return read_json(path, "phase.json", "delete the phase folder and start again") if path.is_file() else None

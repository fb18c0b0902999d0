"""results/benchmarks/README.md: every benchmark's headline figures in one table, each beside
its anchor and the ratio between them, with the command that reruns it and the machine,
versions and date it was measured on.

Built from the benchmarks' JSON files (never typed by hand), rebuilt by `clipsearch bench
summary` and after every `clipsearch bench ...` run. A benchmark whose JSON is missing is
listed as not measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

INDEX = "README.md"


@dataclass(frozen=True)
class Figure:
    what: str
    ours: str
    anchor: str
    theirs: str
    ratio: str


def _f(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _over(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0 (a tiny run can measure 0 MB)."""
    return None if a is None or not b else a / b


def train_figures(d: dict) -> list[Figure]:
    ours = d["clipsearch"]
    out = [Figure("training step, samples/s", _f(ours["samples_per_s"], 0), "naive loop (PIL per item)",
                  _f(d["naive"]["samples_per_s"], 0), _x(d["speedup_steps_per_s"])),
           Figure("data wait per step, ms", _f(ours["data_ms_per_step"]), "naive loop (PIL per item)",
                  _f(d["naive"]["data_ms_per_step"]), _x(d["data_wait_ratio"]))]
    if "open_clip" in d:
        out.insert(1, Figure("training step, samples/s", _f(ours["samples_per_s"], 0), "open_clip's step, same towers",
                             _f(d["open_clip"]["samples_per_s"], 0), _x(d["speedup_over_open_clip"])))
    return out


def data_figures(d: dict) -> list[Figure]:
    variants = d["variants"]
    cache, naive = variants["cache"], variants["decode_workers0"]
    out = [Figure("data only, seconds per epoch (cache hit)", _f(cache["seconds_per_epoch"], 2),
                  "decode every epoch, workers=0", _f(naive["seconds_per_epoch"], 2),
                  _x(_over(naive["seconds_per_epoch"], cache["seconds_per_epoch"])))]
    if "decode_workers2" in variants:
        w2 = variants["decode_workers2"]
        out.append(Figure("data only, seconds per epoch (cache hit)", _f(cache["seconds_per_epoch"], 2),
                          "decode every epoch, workers=2", _f(w2["seconds_per_epoch"], 2),
                          _x(_over(w2["seconds_per_epoch"], cache["seconds_per_epoch"]))))
    out.append(Figure("one-time cache build, s", _f(d.get("cache_build_seconds"), 1), "", "", ""))
    return out


def search_figures(d: dict) -> list[Figure]:
    total, grid = d["protocol"]["total"], d["grid"]
    over = f" ({total['over']})" if total.get("over") else ""  # the medians over search seeds
    out = [Figure(f"search: best objective{over}", _f(total["best"], 2), "exhaustive grid, same space",
                  _f(grid["best"], 2), _x(total["best_over_grid_best"])),
           Figure(f"search: epochs spent{over}", _f(total["epochs_spent"]), "exhaustive grid, same space",
                  _f(grid["epochs_spent"]), _x(_over(1.0, total["epoch_share_of_grid"]))),
           Figure("search: goal (within 1% for <= 1/4 of the epochs)",
                  "met" if total["goal_met"] else "not met", "", "", "")]
    if total.get("random_search_best") is not None:
        out.append(Figure(f"search: best objective{over}", _f(total["best"], 2),
                          "random search, same epochs (replayed on the grid's curves)",
                          _f(total["random_search_best"], 2), _x(_over(total["best"], total["random_search_best"]))))
    return out


def tune_figures(d: dict) -> list[Figure]:
    loop = d["median_seconds"]["in_process"]
    trials = d["setup"]["trials"]
    out = []
    for key, label in (("tune_reuse_actors", "reuse_actors=True"), ("tune_fresh_actors", "a fresh actor per trial")):
        seconds = d["median_seconds"][key]
        out.append(Figure(f"platform: s per trial, Ray Tune {label}", _f(seconds / trials), "in-process train() loop",
                          _f(loop / trials), _x(_over(loop, seconds))))
    figures = d.get("figures")
    if figures:  # goodput: the share of wall time in training steps and evaluations
        reuse, own = figures["tune_reuse_actors"], figures["in_process"]
        out.append(Figure("platform: goodput, Ray Tune reuse_actors=True", _f(100 * reuse["goodput"], 0, "%"),
                          "in-process train() loop", _f(100 * own["goodput"], 0, "%"),
                          _x(_over(reuse["goodput"], own["goodput"]))))
    return out


def eval_figures(d: dict) -> list[Figure]:
    v = d["variants"]
    ours, full = v["faiss_chunked"], v["torch_full"]
    n = f"{d['setting']['queries']:,} queries, top-{d['setting']['k']} of {d['setting']['gallery']:,}"
    return [Figure(f"retrieval {n}, s", _f(ours["median_seconds"], 2), "torch matmul + topk, whole matrix",
                   _f(full["median_seconds"], 2), _x(_over(full["median_seconds"], ours["median_seconds"]))),
            Figure("retrieval, peak extra memory MB", _f(ours["peak_extra_mb"], 0), "torch matmul + topk, whole matrix",
                   _f(full["peak_extra_mb"], 0), _x(_over(full["peak_extra_mb"], ours["peak_extra_mb"])))]


def gpu_figures(d: dict) -> list[Figure]:
    share = d.get("share_of_peak")
    return [Figure(f"seed 001 model step, samples/s ({d['setting']['precision']}, batch {d['setting']['batch_size']})",
                   _f(d["samples_per_s"], 0), "the device's peak dense bf16 FLOP/s",
                   _f(None if not d.get("peak_bf16_flops_per_s") else d["peak_bf16_flops_per_s"] / 1e12, 0, " TFLOP/s"),
                   "-" if share is None else f"{100 * share:.1f}% of peak")]


def reliability_figures(d: dict) -> list[Figure]:
    t = d["totals"]
    return [Figure("faults and bad inputs survived", f"{t['passed']} of {t['tried']}", "", "", f"{t['lost']} lost")]


EXTRACTORS: dict[str, Callable[[dict], list[Figure]]] = {
    "train": train_figures, "data": data_figures, "search": search_figures, "tune": tune_figures,
    "eval": eval_figures, "gpu": gpu_figures, "reliability": reliability_figures,
}


def _measured_on(env: dict) -> str:
    device = env.get("cuda") or "CPU only"
    return f"{env['date'][:10]}, {env['machine']} x{env['cpu_count']} ({device}), torch {env['torch']}"


def build_index(folder: Path) -> str:
    lines = ["# Benchmarks", "",
             "Every figure is a ratio taken in one run on one machine (these machines are shared and noisy).",
             "Each row links its own table; `clipsearch bench summary` rebuilds this file from the JSON files.",
             "ratio: how many times better clipsearch does than the anchor on that figure (above 1: clipsearch",
             "ahead; below 1: behind), e.g. the anchor's seconds / clipsearch's.", "",
             "| benchmark | figure | clipsearch | anchor | anchor's figure | ratio | measured on | rerun |",
             "|---|---|---|---|---|---|---|---|"]
    for name, extract in EXTRACTORS.items():
        path = folder / f"{name}.json"
        if not path.is_file():
            lines.append(f"| {name} | not measured | | | | | | `clipsearch bench {name}` |")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for fig in extract(data):
            lines.append(f"| [{name}]({name}.md) | {fig.what} | {fig.ours} | {fig.anchor} | {fig.theirs} | "
                         f"{fig.ratio} | {_measured_on(data['environment'])} | `{data['command']}` |")
    return "\n".join(lines) + "\n"


def write_index(folder: Path = Path("results/benchmarks")) -> Path:
    path = folder / INDEX
    path.write_text(build_index(folder), encoding="utf-8")
    return path

"""`clipsearch bench reliability`: faults survived and bad inputs tried, counted from an actual run.

Two sources, both run here, never copied from elsewhere:
- the census: the quick fault and bad-input tests (those CI runs), run with pytest and counted
  case by case, each filed under the category its `census` marker names (clipsearch.bench.census);
- the kill loop (clipsearch.bench.kill_loop): a quick phase 1 whose driver is SIGKILLed at
  random moments and resumed, and a trial worker killed mid-epoch;
- with --soak (clipsearch.bench.soak): a quick phase 1 of 100 trials run to its end, its driver's
  RSS sampled each second and held to a stated bound;
- with --node-loss (clipsearch.bench.node_loss): a two-node cluster whose worker node's raylet
  is SIGKILLed mid-epoch under a trial;
- with --oom (clipsearch.bench.oom): a trial that grows until Ray's memory monitor kills it;
- with --tracking-outage (clipsearch.bench.tracking_outage): the MLflow server of a quick phase 1
  killed mid-phase for a minute and started again.
Writes OUT/reliability.json and OUT/reliability.md: per category, cases tried, passed, and what
was lost (failed cases, trials lost or repeated, half-written files, runs left open). Each part
is a section dated by the run that produced it; a run keeps the sections it did not redo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from . import census as census_plugin
from .common import environment, write_result

#: where the census's cases are: the tests of these files marked census (each filed under the
#: category its marker names); the rest of tests/ is not collected, which would take longer
CENSUS_TESTS = ["tests/test_bad_input.py", "tests/test_reliability.py", "tests/test_train.py",
                # the driver's guards: a second driver (of a search, of a confirm), a space edited before
                # --resume, the Optuna storage
                "tests/tune/test_driver_lock.py", "tests/tune/test_confirm.py", "tests/tune/test_space_change.py",
                "tests/tune/test_studies.py",
                # a trial out of memory, a node lost: the hook that grows a trial, the reason, Tune's handling
                "tests/bench/test_faults.py", "tests/tune/test_trial_errors.py",
                # the tracking server down: the driver's MLflow calls queued and replayed
                "tests/test_tracking_outbox.py"]


#: the sections of the result, each produced by one part of the command, each dated by its run
SECTIONS = ("census", "kill loop", "soak", "node loss", "out of memory", "tracking outage")
SOAK_ROW = "soak: phase 1 run to its end, driver RSS bounded (bench)"
NODE_LOSS_ROW = "node lost mid-epoch, its trial on from its checkpoint elsewhere (bench)"
OOM_ROW = "trial out of memory: errored with the reason, the phase goes on (bench)"
OUTAGE_ROW = "tracking server down a minute mid-phase: all logged once back, no run RUNNING (bench)"


def run_reliability_benchmark(out_dir: Path, kills: int, trials: int, census: bool, seed: int,
                              soak: bool = False, soak_trials: int = 100, node_loss: bool = False,
                              oom: bool = False, tracking_outage: bool = False) -> Path:
    """Run the parts asked for; the sections of OUT/reliability.json this run did not redo are
    kept from the previous file, with the date and command of the run that made them."""
    command = _command(kills, trials, census, seed, soak, soak_trials, node_loss, oom, tracking_outage)
    run = {"date": environment()["date"], "command": command}
    fresh: dict[str, dict] = {}  # section -> {"categories": ..., extra keys}
    if census:
        fresh["census"] = {"categories": census_categories(run_census(Path.cwd()))}
    if kills:
        fresh["kill loop"] = _kill_loop_section(kills, trials, seed)
    if soak:
        fresh["soak"] = _soak_section(soak_trials)
    if node_loss:
        fresh["node loss"] = _node_loss_section(seed)
    if oom:
        fresh["out of memory"] = _oom_section()
    if tracking_outage:
        fresh["tracking outage"] = _outage_section()
    sections = {**_previous_sections(out_dir / "reliability.json"), **{k: {**v, "run": run} for k, v in fresh.items()}}
    return _write(out_dir, command, sections)


def census_categories(cases: list[dict]) -> dict[str, dict]:
    """Per category, in the order its first case ran: cases tried, passed and lost, and the
    ids of those that failed."""
    categories: dict[str, dict] = {}
    for case in cases:
        row = categories.setdefault(case["category"], {"tried": 0, "passed": 0, "lost": 0, "failed_cases": []})
        passed = case["outcome"] == "passed"
        row["tried"] += 1
        row["passed"] += passed
        if not passed:
            row["lost"] += 1
            row["failed_cases"].append(case["id"])
    return categories


def _kill_loop_section(kills: int, trials: int, seed: int) -> dict:
    from .kill_loop import run_kill_loop

    loop = run_kill_loop(kills=kills, trials=trials, seed=seed)
    ok = loop.lost == 0 and loop.final_exit_code == 0
    return {"kill_loop": {**asdict(loop), "lost": loop.lost}, "categories": {
        "driver killed + --resume (bench)": {"tried": loop.kills_done, "passed": loop.kills_done if ok else 0,
                                             "lost": loop.lost, "failed_cases": loop.notes},
        "worker killed mid-epoch (bench)": {"tried": loop.worker_kills, "passed": loop.worker_kills if ok else 0,
                                            "lost": loop.lost if loop.worker_kills else 0, "failed_cases": []}}}


def _soak_section(trials: int) -> dict:
    from . import soak as soak_module

    soak = soak_module.run_soak(trials=trials)
    summary = soak_module.rss_summary(soak.samples, trials)
    failures = soak_module.check(soak, summary)
    record = {k: v for k, v in asdict(soak).items() if k != "samples"}
    record |= {"rss": summary, "curve_mib": soak_module.rss_curve(soak.samples, trials), "failures": failures,
               "bound": {"peak_rss_mib_below": soak_module.PEAK_RSS_BOUND // soak_module.MIB,
                         "growth_25_to_100pct_below": soak_module.GROWTH_BOUND}}
    lost = trials - soak.terminated + (soak.rows - soak.distinct_trials) + soak.runs_left_running
    return {"soak": record, "categories": {SOAK_ROW: {"tried": 1, "passed": int(not failures), "lost": lost,
                                                      "failed_cases": failures}}}


def _node_loss_section(seed: int) -> dict:
    from .node_loss import run_node_loss

    loss = run_node_loss(seed=seed)
    lost = loss.trials_configured - loss.terminated + len(loss.failures)
    return {"node_loss": asdict(loss), "categories": {NODE_LOSS_ROW: {
        "tried": 1, "passed": int(not loss.failures), "lost": lost if loss.failures else 0,
        "failed_cases": loss.failures}}}


def _oom_section() -> dict:
    from .oom import run_out_of_memory

    oom = run_out_of_memory()
    return {"out_of_memory": asdict(oom), "categories": {OOM_ROW: {
        "tried": 1, "passed": int(not oom.failures), "lost": len(oom.failures), "failed_cases": oom.failures}}}


def _outage_section() -> dict:
    from .tracking_outage import run_tracking_outage

    outage = run_tracking_outage()
    return {"tracking_outage": asdict(outage), "categories": {OUTAGE_ROW: {
        "tried": 1, "passed": int(not outage.failures), "lost": len(outage.failures),
        "failed_cases": outage.failures}}}


def _previous_sections(path: Path) -> dict[str, dict]:
    """The sections of an earlier reliability.json, by name; a file from before sections were
    kept apart is split by its rows' names and dated by its one run."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    if "sections" in old:
        return old["sections"]
    run = {"date": old["environment"]["date"], "command": old["command"]}
    sections: dict[str, dict] = {}
    for name, row in old["categories"].items():
        section = "kill loop" if name.endswith("(bench)") else "census"
        sections.setdefault(section, {"categories": {}, "run": run})["categories"][name] = row
    if old.get("kill_loop"):
        sections["kill loop"]["kill_loop"] = old["kill_loop"]
    return sections


def _write(out_dir: Path, command: str, sections: dict[str, dict]) -> Path:
    categories = {name: row for s in SECTIONS if s in sections for name, row in sections[s]["categories"].items()}
    result = {"environment": environment(), "command": command, "sections": sections, "categories": categories,
              "kill_loop": sections.get("kill loop", {}).get("kill_loop"), "soak": sections.get("soak", {}).get("soak"),
              "totals": {k: sum(c[k] for c in categories.values()) for k in ("tried", "passed", "lost")}}
    rows = [(name, c["tried"], c["passed"], c["lost"]) for name, c in categories.items()]
    rows.append(("**total**", *result["totals"].values()))
    path = write_result(out_dir, "reliability", result, rows, ("category", "tried", "passed", "lost"))
    with open(path, "a", encoding="utf-8") as md:
        md.write("\n" + "\n".join(_md_runs(sections) + _md_soak(result["soak"]) + _md_faults(sections)
                                     + _md_outage(sections.get("tracking outage", {}).get("tracking_outage"))) + "\n")
    return path


def _md_runs(sections: dict[str, dict]) -> list[str]:
    lines = ["Each section comes from its own run (a run redoes only the parts it was asked for; the date "
             "above is the latest run's):", ""]
    return lines + [f"- {s}: {sections[s]['run']['date']}, `{sections[s]['run']['command']}`"
                    for s in SECTIONS if s in sections]


def _md_soak(soak: dict | None) -> list[str]:
    if not soak:
        return []
    rss, bound = soak["rss"], soak["bound"]
    return ["", "## soak", "",
            f"Quick phase 1 of {soak['trials_configured']} trials (1 epoch on 5% of the data, 2 at a time): "
            f"exit {soak['exit_code']}, {soak['seconds']:.0f} s, {soak['rows']} rows, {soak['distinct_trials']} "
            f"distinct trials, {soak['terminated']} TERMINATED, {soak['errored']} ERROR, "
            f"{soak['runs_left_running']} MLflow runs left RUNNING.", "",
            f"Driver RSS (MiB), median of 5 s from the moment: first trial done {rss.get('start_mib')}, "
            f"25% of trials {rss.get('at_25pct')}, 50% {rss.get('at_50pct')}, 75% {rss.get('at_75pct')}, "
            f"100% {rss.get('at_100pct')}; peak {rss.get('peak_mib')}, last sample {rss.get('last_mib')}; "
            f"growth 25%->100% {rss.get('growth_25_to_100pct')} ({rss.get('growth_per_10_trials_mib')} MiB "
            f"per 10 trials).", "",
            f"Bound: peak < {bound['peak_rss_mib_below']} MiB and growth 25%->100% < "
            f"{bound['growth_25_to_100pct_below']}: **{'pass' if not soak['failures'] else 'FAIL'}**"
            + "".join(f"; {f}" for f in soak["failures"]) + "."]


def _md_faults(sections: dict[str, dict]) -> list[str]:
    """What the user saw of the node-loss and out-of-memory trials: the driver's own lines."""
    lines = []
    for name, key, what in (("node loss", "node_loss", "the trial whose node was lost"),
                            ("out of memory", "out_of_memory", "the trial that ran out of memory")):
        record = sections.get(name, {}).get(key)
        if record:
            lines += ["", f"## {name}", "", f"The driver's lines for {what}:", "", "```",
                      *record["driver_lines"], "```"]
            lines += [f"- {f}" for f in record["failures"]] or ["All checks passed."]
    return lines


def _md_outage(outage: dict | None) -> list[str]:
    """The outage's timeline, what the user saw, and what MLflow held after it."""
    if not outage:
        return []
    replayed = outage["replayed_by"] + (f" (exit {outage['replay_exit_code']})"
                                        if outage["replay_exit_code"] is not None else "")
    lines = ["", "## tracking outage", "",
             f"Quick phase 1 ({outage['budget_minutes']:g}-minute time budget, trials of {outage['epochs']} epochs, "
             f"no early stopping) against `mlflow server` on 127.0.0.1 (sqlite store): the server SIGKILLed (its "
             f"process group) {outage['down_at_s']} s into the phase, after its first epoch, kept down "
             f"{outage['outage_s']:.0f} s, started again on the same port and store and answering at "
             f"{outage['back_at_s']} s; the phase ended at {outage['phase_ended_at_s']} s with exit "
             f"{outage['exit_code']}. What it could not log was replayed by {replayed}. After it: {outage['rows']} "
             f"rows in trials.csv, {outage['child_runs']} child runs ({outage['runs_without_a_row']} of trials the "
             f"budget stopped before an epoch, which trials.csv leaves out), {outage['runs_left_running']} run(s) "
             f"RUNNING, {outage['calls_left_queued']} call(s) queued.", "",
             "The driver's MLflow lines:", "", "```", *outage["driver_lines"], *outage["replay_lines"], "```"]
    verdict = [f"- {f}" for f in outage["failures"]] or [
        "All checks passed: every trial's run FINISHED (FAILED for an errored one) with every epoch of trials.csv "
        "and its last objective, the parent FINISHED with its artifacts."]
    return lines + [""] + verdict


def _command(kills: int, trials: int, census: bool, seed: int, soak: bool = False, soak_trials: int = 100,
             node_loss: bool = False, oom: bool = False, tracking_outage: bool = False) -> str:
    return (f"clipsearch bench reliability --kills {kills} --trials {trials} --seed {seed}"
            + ("" if census else " --no-census") + (f" --soak --soak-trials {soak_trials}" if soak else "")
            + (" --node-loss" if node_loss else "") + (" --oom" if oom else "")
            + (" --tracking-outage" if tracking_outage else ""))


def run_census(repo: Path, collect_only: bool = False) -> list[dict]:
    """Run the census with pytest: one {id, category, outcome} per case marked census in
    CENSUS_TESTS, skipped ones left out; collect_only lists every case without running it
    (outcome None)."""
    missing = [t for t in CENSUS_TESTS if not (repo / t).exists()]
    if missing:
        from ..errors import InputError

        raise InputError(f"the census tests are not here: {', '.join(missing)}", where=str(repo),
                         fix="run clipsearch bench reliability from a clipsearch checkout (the repository root)")
    with tempfile.TemporaryDirectory() as tmp:
        found = Path(tmp) / "census.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                               census_plugin.__name__, f"--census-json={found}", "-m", census_plugin.MARKER,
                               *(["--collect-only"] * collect_only),
                               *CENSUS_TESTS], cwd=repo, env=env, stdout=subprocess.PIPE, text=True, check=False)
        # 0: all passed, 1: some failed (counted as lost); anything else: the census did not run
        if done.returncode not in (0, 1) or not found.is_file():
            raise RuntimeError(f"the census did not run (pytest exit {done.returncode}): "
                               f"{' | '.join(done.stdout.strip().splitlines()[-3:])}")
        cases = json.loads(found.read_text(encoding="utf-8"))
    return [case for case in cases if case["outcome"] != "skipped"]


if __name__ == "__main__":  # a quick look at the census without the kill loop
    started = time.time()
    print(json.dumps(run_census(Path.cwd()), indent=1), f"{time.time() - started:.0f} s")

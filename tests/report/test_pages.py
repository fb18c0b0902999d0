"""Report files of a phase and of an experiment, bad input, degraded cases, MLflow logging."""

import json
import re
import warnings

import pytest

from clipsearch.errors import InputError
from clipsearch.report import export, log_phase_report, report_after_run, report_command
from clipsearch.report.pages import build_phase, write_phase_report
from clipsearch.report.sources import declared_distributions as read_declared
from clipsearch.report.sources import load_phase, phase_histories
from clipsearch.results import append_history

from .conftest import CHANCE, CONFIGS, CURVES, MIN_RANKS, RANKS, STARTED, write_phase


def no_png(monkeypatch):
    """PNG export is its own test (test_browser.py): here it would only cost seconds."""
    monkeypatch.setattr(export, "write_pngs", lambda jobs, folders: [])
    monkeypatch.setattr("clipsearch.report.pages.write_pngs", lambda jobs, folders: [])


def test_phase_report_writes_page_and_importance(hand_phase, monkeypatch):
    no_png(monkeypatch)
    page = report_command(hand_phase)
    assert page == hand_phase / "report.html"
    text = page.read_text(encoding="utf-8")
    assert text.count("plotly.js v") == 1  # the library inlined once, never fetched
    assert not re.search(r"<script[^>]*\bsrc=", text)  # no script fetched from anywhere
    importance = json.loads((hand_phase / "importance.json").read_text())
    assert (importance["common_epoch"], importance["trials_used"]) == (2, 4)
    assert set(importance["methods"]) == {"fanova", "ped_anova"}
    assert "at epoch 2 over 4 trials" in text


def test_phase_report_has_every_figure_of_the_seed_report(hand_phase):
    report = build_phase(load_phase(hand_phase))
    drawn = {p.name for p in report.panels if p.figure is not None}
    assert drawn == {"parallel_coordinates", "importance", "optimizer_vs_loss", "objective_by_optimizer",
                     "objective_by_loss", "progression", "best_vs_compute", "learning_curves", "slice", "contour",
                     "timeline"}
    assert report.data.order == STARTED


def test_too_few_trials_the_page_renders_and_says_why(tmp_path, monkeypatch):
    no_png(monkeypatch)
    few = {t: CURVES[t] for t in ("t1", "t2", "t3")}
    phase = write_phase(tmp_path / "exp" / "phase1", few, CONFIGS, {"t1": 1, "t2": 2, "t3": 3})
    text = write_phase_report(phase).read_text(encoding="utf-8")
    assert "Not computed: no epoch has a value of objective for 4 trials" in text
    assert 'id="fig-phase1-parallel_coordinates"' in text  # what can be drawn still is
    importance = json.loads((phase / "importance.json").read_text())
    assert importance["methods"] == {} and "importance needs at least 4" in importance["reason"]


def test_every_trial_errored_the_page_still_renders_and_says_why(tmp_path, monkeypatch):
    no_png(monkeypatch)
    phase = write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, {}, errored=set(CURVES))
    text = write_phase_report(phase).read_text(encoding="utf-8")
    assert "Not shown: 0 trial(s) with a score; the plot needs 2." in text
    assert "Not shown: no trial was ranked (every trial errored)." in text
    assert "none (no best.json)" in text


def test_a_malformed_optional_file_is_a_note_not_a_failure(hand_phase, monkeypatch):
    no_png(monkeypatch)
    (hand_phase / "confusion_matrix.json").write_text(json.dumps({"matrix": [[1, 2], [3, 4]]}))
    text = write_phase_report(hand_phase).read_text(encoding="utf-8")
    assert "Not shown: confusion_matrix.json needs keys &#x27;matrix&#x27; and &#x27;class_names&#x27;." in text


def test_without_history_curves_are_missing_and_importance_uses_trials_csv(tmp_path, monkeypatch):
    no_png(monkeypatch)
    phase = write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, {"t1": 1, "t2": 2, "t5": 3, "t4": 4, "t3": 5},
                        errored={"t6"}, history=False)
    text = write_phase_report(phase).read_text(encoding="utf-8")
    assert ("Not shown: no per-epoch records (no history/ folder in "
            f"{phase}: the phase was run before clipsearch kept its own per-trial histories)") in text
    importance = json.loads((phase / "importance.json").read_text())
    # trials.csv knows each trial's best epoch and last one only: epoch 4 for t1, t2, t5; 3 for t2;
    # 2 for t4; 1 for t3. No epoch has the 4 values needed.
    assert importance["reason"].startswith("no epoch has a value of objective for 4 trials (at most 3 of 5")


def test_not_an_experiment_is_an_input_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="not an experiment or a phase"):
        report_command(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        report_command(tmp_path / "nowhere")


def test_experiment_report_has_a_section_per_phase_and_their_best(hand_phase, monkeypatch):
    no_png(monkeypatch)
    exp = hand_phase.parent
    sweep = {f"s{i}": [score] for i, score in enumerate([362.0, 906.7, 895.8, 865.8])}
    configs = {f"s{i}": {"optimizer.lr": lr, "optimizer.weight_decay": wd}
               for i, (lr, wd) in enumerate([(3e-5, 1e-4), (1e-6, 0.01), (1e-6, 0.1), (1e-7, 0.01)])}
    write_phase(exp / "sweep", sweep, configs, {"s1": 1, "s2": 2, "s3": 3, "s0": 4})
    page = report_command(exp)
    assert page == exp / "report.html"
    text = page.read_text(encoding="utf-8")
    assert text.count("plotly.js v") == 1
    assert '<h2 id="phase1">' in text and '<h2 id="sweep">' in text
    assert text.index('id="phase1"') < text.index('id="sweep"')
    assert 'id="fig-sweep-lr_wd_grid"' in text and 'id="fig-phase1-lr_wd_grid"' not in text
    assert (hand_phase / "report.html").is_file() and (exp / "sweep" / "importance.json").is_file()
    assert "906.7" in text  # the sweep's best in the summary


def test_png_export_failure_is_one_warning_and_the_page_stands(hand_phase, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Kaleido requires Google Chrome to be installed.")

    monkeypatch.setattr("plotly.io.write_images", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = write_phase_report(hand_phase)
    assert page.is_file()
    messages = [str(w.message) for w in caught if issubclass(w.category, export.ReportWarning)]
    assert len(messages) == 1 and "PNG export skipped" in messages[0]


def test_histories_keep_the_later_report_of_an_epoch_and_ignore_a_torn_line(tmp_path):
    folder = tmp_path / "history"
    for row in ({"epoch": 1, "objective": 1.0, "trial_id": "a", "hostname": "vm"}, {"epoch": 2, "objective": 2.0},
                {"epoch": 2, "objective": 2.5}):  # epoch 2 again after a resume
        append_history(folder, "a", row)
    with (folder / "trial_a.jsonl").open("a") as torn:  # a driver killed mid-line
        torn.write('{"epoch": 3, "obj')
    histories, where = phase_histories(folder)
    assert histories == {"a": [{"epoch": 1, "objective": 1.0}, {"epoch": 2, "objective": 2.5}]}
    assert where == f"clipsearch's per-trial records in {folder}"


def test_rays_own_files_are_never_read(tmp_path):
    """Without history/ there are no curves, even beside a Ray trial folder full of results."""
    trial = tmp_path / "ray" / "trial_a"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text(json.dumps({"epoch": 1, "objective": 1.0, "trial_id": "a"}) + "\n")
    histories, why = phase_histories(tmp_path / "history")
    assert histories == {} and why.startswith(f"no history/ folder in {tmp_path}")
    (tmp_path / "history").mkdir()
    assert phase_histories(tmp_path / "history") == ({}, f"no trial reported an epoch in {tmp_path / 'history'}")


@pytest.mark.slow  # an MLflow sqlite store takes seconds to create
def test_report_is_logged_to_the_parent_run_phase_json_names(tmp_path, monkeypatch):
    no_png(monkeypatch)
    from clipsearch import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    exp_id = tracking.experiment_id(client, uri, "exp")
    parent = tracking.phase_run(client, exp_id, "exp", "phase1", {})
    phase = write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, {"t1": 1, "t2": 2, "t5": 3, "t4": 4, "t3": 5},
                        errored={"t6"}, state={"tracking_uri": uri, "parent_run_id": parent})
    assert report_after_run(phase) == phase / "report.html"
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {"report/report.html", "report/importance.json"}
    metrics = client.get_run(parent).data.metrics
    assert set(metrics) == {"importance_optimizer_share_fanova", "importance_loss_share_fanova",
                            "importance_optimizer_share_ped_anova", "importance_loss_share_ped_anova"}
    assert log_phase_report(tmp_path / "elsewhere") is None  # no phase.json: nothing to log to


def test_a_failing_report_does_not_fail_the_phase(tmp_path, capsys):
    assert report_after_run(tmp_path / "no_phase_here") is None
    assert "report not written" in capsys.readouterr().err


def test_distributions_are_read_from_the_phases_optuna_study(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    study.enqueue_trial({"optimizer.lr": 1e-3})
    study.optimize(lambda t: t.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True), n_trials=1)
    found = read_declared(tmp_path / "optuna.db")
    assert found == {"optimizer.lr": {"name": "FloatDistribution",
                                      "attributes": {"step": None, "low": 1e-4, "high": 1e-2, "log": True}}}
    assert read_declared(tmp_path / "missing.db") == {}


# ------------------------------------------------------------------------------ compute, noise, Optuna's plots

def panels(phase) -> dict:
    return {p.name: p for p in build_phase(load_phase(phase)).panels}


def chance_lines(figure) -> list[float]:
    """The heights of the horizontal lines labelled "chance" (on every subplot)."""
    lines = [s.y0 for s in figure.layout.shapes if s.type == "line" and s.y0 == s.y1]
    labels = [a.text for a in figure.layout.annotations if a.text == "chance"]
    return lines if len(labels) == len(lines) else []


def seed_bands(figure) -> list[tuple[float, float]]:
    return [(s.y0, s.y1) for s in figure.layout.shapes if s.type == "rect"]


def test_the_compute_table_heads_the_phase_with_its_numbers(hand_phase, monkeypatch):
    no_png(monkeypatch)
    text = write_phase_report(hand_phase).read_text(encoding="utf-8")
    table = text[text.index("<h3>Compute spent</h3>"):text.index("<h3>Noise floor</h3>")]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", table)
    rows = {cells[i]: cells[i + 1] for i in range(0, len(cells), 3)}
    assert rows == {"epochs over all pairs": "8", "trial-epochs": "16", "trial-seconds": "190",
                    "of which training / evaluation": "32 / 8", "GPU-seconds": "95"}
    assert text.index("<h3>Compute spent</h3>") < text.index('id="fig-phase1-parallel_coordinates"')


def test_on_cpu_the_gpu_seconds_are_zero_and_the_page_says_why(tmp_path, monkeypatch):
    no_png(monkeypatch)
    phase = write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, RANKS, errored={"t6"},
                        state={"resources": {"cpu": 2.0, "gpu": 0.0}})
    text = write_phase_report(phase).read_text(encoding="utf-8")
    assert "<td class=text>GPU-seconds</td><td>0</td><td class=text>none: the trials ran on CPU" in text
    assert "<td class=text>epochs over all pairs</td><td>16</td>" in text  # no data.fraction: whole epochs


def test_the_chance_line_is_on_every_figure_of_the_objective(hand_phase):
    drawn = panels(hand_phase)
    for name in ("progression", "best_vs_compute", "learning_curves", "objective_by_optimizer", "objective_by_loss"):
        assert chance_lines(drawn[name].figure) == [CHANCE], name
    assert set(chance_lines(drawn["slice"].figure)) == {CHANCE}  # one line per parameter's subplot
    parallel = drawn["parallel_coordinates"].figure.data[0]
    assert (parallel.line.cmin, parallel.line.cmax) == (CHANCE, 5)  # the scores: 1.5 to 5
    assert "chance 0.8" in parallel.line.colorbar.title.text
    assert chance_lines(drawn["contour"].figure) == [] and chance_lines(drawn["timeline"].figure) == []


def test_without_a_chance_level_no_line_is_drawn_and_the_page_says_so(tmp_path, monkeypatch):
    no_png(monkeypatch)
    phase = write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, RANKS, errored={"t6"}, history=False)
    drawn = panels(phase)
    assert chance_lines(drawn["progression"].figure) == []
    assert drawn["parallel_coordinates"].figure.data[0].line.cmin is None
    assert "not known: the trials reported no chance_objective" in write_phase_report(phase).read_text()


def write_confirm(exp, content) -> None:
    (exp / "confirm").mkdir(exist_ok=True)
    (exp / "confirm" / "confirm.json").write_text(content if isinstance(content, str) else json.dumps(content))


def test_a_confirm_json_gives_the_best_a_band_of_its_seeds_spread(hand_phase, monkeypatch):
    no_png(monkeypatch)
    write_confirm(hand_phase.parent, [{"config": {**CONFIGS["t1"], "seed": 9}, "objectives": [3.6, 4.0, 4.4],
                                       "mean": 4.0, "ci95": [3.0, 5.0]}])
    drawn = panels(hand_phase)
    for name in ("progression", "best_vs_compute"):
        assert seed_bands(drawn[name].figure) == [pytest.approx((3.6, 4.4))], name
    text = write_phase_report(hand_phase).read_text(encoding="utf-8")
    assert "over 3 seeds: mean 4 ± std 0.4, 95% CI [3, 5]; its one-seed score here 4" in text
    assert "two scores closer than the seeds&#x27; std (the band&#x27;s half-width) are not told apart" in text


@pytest.mark.parametrize("content", [None, "{not json", {"unexpected": "shape"}, [{"config": "t1"}]])
def test_without_a_usable_confirm_json_there_is_no_band_and_no_error(hand_phase, monkeypatch, content):
    no_png(monkeypatch)
    if content is not None:
        write_confirm(hand_phase.parent, content)
    drawn = panels(hand_phase)
    assert seed_bands(drawn["progression"].figure) == [] and seed_bands(drawn["best_vs_compute"].figure) == []
    text = write_phase_report(hand_phase).read_text(encoding="utf-8")
    assert f"not known: {hand_phase.parent / 'confirm' / 'confirm.json'} holds no seed reruns" in text


def test_a_confirm_of_other_configurations_draws_no_band_and_says_so(hand_phase, monkeypatch):
    no_png(monkeypatch)
    write_confirm(hand_phase.parent, [{"config": CONFIGS["t2"], "objectives": [3, 3.5], "mean": 3.25,
                                       "ci95": [0.1, 6.4]}])
    assert seed_bands(panels(hand_phase)["best_vs_compute"].figure) == []
    assert ("not known for this phase: none of confirm.json&#x27;s 1 configurations is this phase&#x27;s best "
            "trial&#x27;s (t1)") in write_phase_report(hand_phase).read_text(encoding="utf-8")


def test_slice_contour_and_timeline_are_drawn_from_the_phases_trials(hand_phase):
    drawn = panels(hand_phase)
    assert drawn["contour"].title == "Contour plot: optimizer.lr x optimizer.weight_decay"
    assert [t.name for t in drawn["timeline"].figure.data] == ["COMPLETE", "FAIL", "PRUNED"]
    assert sum(len(t.y) for t in drawn["timeline"].figure.data) == 6
    # the slice plots t1, t2 and t5, the trials that ran every epoch: 3 points per parameter
    points = [t for t in drawn["slice"].figure.data if t.mode == "markers"]
    assert len(points) == 4 and all(len(t.y) == 3 for t in points)


def test_slice_contour_and_timeline_become_notes_when_the_phase_cannot_show_them(tmp_path):
    one_complete = {t: CURVES[t] for t in ("t1", "t3", "t4")}  # t3, t4 stopped early
    drawn = panels(write_phase(tmp_path / "a" / "phase1", one_complete, CONFIGS, {"t1": 1, "t4": 2, "t3": 3},
                               history=False))
    assert drawn["slice"].figure is None and "1 trial(s) ran every epoch; the slice plot needs 2" in drawn["slice"].note
    assert drawn["contour"].figure is None and "the contour plot needs 2" in drawn["contour"].note
    assert drawn["timeline"].note == "Not shown: no trial has a start time (no per-epoch records in history/)."
    one_numeric = {t: {"optimizer.name": c["optimizer.name"], "optimizer.lr": c["optimizer.lr"]}
                   for t, c in CONFIGS.items()}
    drawn = panels(write_phase(tmp_path / "b" / "phase1", CURVES, one_numeric, RANKS, errored={"t6"}))
    assert "1 numeric parameter(s) take two values or more" in drawn["contour"].note
    assert drawn["slice"].figure is not None and drawn["timeline"].figure is not None


def test_the_experiment_page_draws_every_phases_best_against_the_experiments_compute(hand_phase, monkeypatch):
    no_png(monkeypatch)
    exp = hand_phase.parent
    write_phase(exp / "phase2", {"g1": [2.0, 4.5], "g2": [1.0, 2.0]}, {"g1": {"optimizer.lr": 1e-3},
                                                                    "g2": {"optimizer.lr": 1e-4}}, {"g1": 1, "g2": 2})
    text = report_command(exp).read_text(encoding="utf-8")
    assert 'id="fig-experiment-best_vs_compute"' in text
    assert text.index('id="fig-experiment-best_vs_compute"') < text.index('<h2 id="phase1">')
    assert "<th>epochs spent</th><th>trial-seconds</th>" in text


@pytest.mark.parametrize("setting, exported", [("0", False), ("1", True)])
def test_the_report_a_search_ends_with_writes_pngs_unless_turned_off(hand_phase, monkeypatch, setting, exported):
    asked = []
    monkeypatch.setattr("clipsearch.report.pages.write_pngs", lambda jobs, folders: asked.append(len(jobs)) or [])
    monkeypatch.setenv("CLIPSEARCH_REPORT_PNG", setting)
    assert report_after_run(hand_phase) == hand_phase / "report.html"
    assert (len(asked) == 1 and asked[0] > 0) if exported else asked == []


def test_the_report_a_protocol_ends_with_exports_only_the_experiments_own_pngs(hand_phase, monkeypatch):
    """Each phase's report wrote its PNGs when the phase ended; `clipsearch report results/EXP`
    still writes every one."""
    asked = []
    monkeypatch.setattr("clipsearch.report.pages.write_pngs", lambda jobs, folders: asked.append(jobs) or [])
    monkeypatch.setenv("CLIPSEARCH_REPORT_PNG", "1")
    exp = hand_phase.parent
    assert report_after_run(exp) == exp / "report.html"
    assert [path.relative_to(exp).as_posix() for _, path in asked[-1]] == ["report_png/best_vs_compute.png"]
    report_command(exp)
    assert len(asked[-1]) > 1 and any(path.parent == hand_phase / "report_png" for _, path in asked[-1])


def test_a_phase_of_mode_min_is_reported_lowest_first(tmp_path, monkeypatch):
    no_png(monkeypatch)
    phase = write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, MIN_RANKS, errored={"t6"}, started=STARTED,
                        state={"mode": "min"})
    report = build_phase(load_phase(phase))
    assert report.data.mode == "min" and report.importance["mode"] == "min"
    drawn = {p.name: p.figure for p in report.panels if p.figure is not None}
    best_line = next(t for t in drawn["progression"].data if t.name == "best so far")
    assert list(best_line.y) == [5, 1, 2, 1, 0.5]
    assert drawn["parallel_coordinates"].data[0].line.reversescale is True
    text = write_phase_report(phase).read_text(encoding="utf-8")
    assert "objective (lower is better)" in text

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

from .conftest import CONFIGS, CURVES, STARTED, write_phase


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
                     "objective_by_loss", "progression", "learning_curves"}
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

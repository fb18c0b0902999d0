"""trials.csv and best.json: one row per trial, typed round trip, atomic writes."""

import json

import pytest

from clipsearch.errors import InputError
from clipsearch.results import (TrialRecord, best_summary, rank_trials, ranked_rows, read_json, read_trials_csv,
                                trial_rows, write_json, write_trials_csv)


def records():
    def rows(values):
        return [{"epoch": e + 1, "objective": v, "tr1": v / 2, "train_loss": 1.0 / (e + 1)} for e, v in enumerate(values)]

    return [
        TrialRecord("t1", "TERMINATED", {"optimizer.name": "adamw", "optimizer.lr": 1e-3, "seed": 0}, rows([3.0, 5.0]), 12.5),
        TrialRecord("t2", "TERMINATED", {"optimizer.name": "radam", "optimizer.lr": 3e-3, "seed": 0}, rows([4.0]), 6.0),
        TrialRecord("t3", "ERROR", {"optimizer.name": "momentum", "optimizer.lr": 1e3, "seed": 0}, rows([3.5]), 7.0,
                    num_failures=3, error="NonFiniteLossError: loss is nan at epoch 2, step 1"),
    ]


def test_trials_csv_has_one_row_per_trial_and_reads_back_typed(tmp_path):
    recs = records()
    rows = trial_rows(recs, rank_trials(recs, "objective"), "objective", epochs=2)
    write_trials_csv(tmp_path / "trials.csv", rows)
    back = read_trials_csv(tmp_path / "trials.csv")
    assert [r["trial_id"] for r in back] == ["t1", "t2", "t3"]
    t1, t2, t3 = back
    assert (t1["rank"], t1["epochs"], t1["stopped_early"], t1["objective"], t1["best_epoch"]) == (1, 2, False, 5.0, 2)
    assert t1["config"] == {"optimizer.name": "adamw", "optimizer.lr": 1e-3, "seed": 0}
    assert t2["stopped_early"] is True and t2["rank"] == 2
    assert t3["status"] == "ERROR" and t3["rank"] is None and t3["num_failures"] == 3
    assert t3["error"].startswith("NonFiniteLossError")
    assert [r["trial_id"] for r in ranked_rows(back)] == ["t1", "t2"]
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place


def test_trial_ids_and_text_that_look_like_numbers_stay_text(tmp_path):
    recs = [TrialRecord(tid, "TERMINATED", {"data.source": "runs/1_000", "model.text_tower": "hf:minilm",
                                            "optimizer.lr": 1e-3, "train.epochs": 4}, [{"epoch": 1, "objective": 1.0}])
            for tid in ("12e45678", "88250_00003", "00012345")]
    write_trials_csv(tmp_path / "trials.csv", trial_rows(recs, rank_trials(recs, "objective"), "objective", 1))
    back = read_trials_csv(tmp_path / "trials.csv")
    assert sorted(r["trial_id"] for r in back) == ["00012345", "12e45678", "88250_00003"]
    assert back[0]["config"] == {"data.source": "runs/1_000", "model.text_tower": "hf:minilm",
                                 "optimizer.lr": 1e-3, "train.epochs": 4}


def test_best_json_names_the_best_trial_and_what_it_decided(tmp_path):
    best = best_summary("phase1", "exp", "objective", records(), searched=["optimizer.lr", "optimizer.name"])
    assert best["trial_id"] == "t1" and best["score"] == 5.0 and best["compared_at_epoch"] == 2
    assert best["decided"] == {"optimizer.name": "adamw", "optimizer.lr": 1e-3}
    assert (best["trials"], best["ranked"], best["errored"]) == (3, 2, 1)
    write_json(tmp_path / "best.json", best)
    assert json.loads((tmp_path / "best.json").read_text())["trial_id"] == "t1"


def test_no_ranked_trial_means_no_best():
    errored = [r for r in records() if r.status == "ERROR"]
    assert best_summary("phase1", "exp", "objective", errored, searched=[]) is None


def test_missing_results_are_an_input_error(tmp_path):
    with pytest.raises(InputError, match="run the previous phase"):
        read_trials_csv(tmp_path / "trials.csv")
    with pytest.raises(InputError, match="not found"):
        read_json(tmp_path / "best.json", "best.json", "run it")

"""The noise floor: the chance level the trials reported, and confirm.json's seed spread."""

import pytest

from clipsearch.report import noise as N
from clipsearch.report.data import Unavailable

from .conftest import CONFIGS, hand_rows

SEARCHED = ["loss.name", "optimizer.name", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay"]


def confirm_item(config: dict, objectives=(3.6, 4.0, 4.4), mean=4.0, ci95=(3.0, 5.0)) -> dict:
    return {"config": config, "objectives": list(objectives), "mean": mean, "ci95": list(ci95)}


def test_chance_is_read_from_the_histories_else_from_trials_csv():
    histories = {"a": [{"epoch": 1, "objective": 2.0, "chance_objective": 0.8}], "b": [{"epoch": 1}]}
    assert N.chance_level(histories, [], "objective") == 0.8
    rows = [{"trial_id": "a", "chance_objective": 0.7}]
    assert N.chance_level({"a": [{"epoch": 1, "objective": 2.0}]}, rows, "objective") == 0.7
    assert N.chance_level({}, hand_rows(), "objective") is None
    assert N.chance_level({"a": [{"chance_acc": 0.1}]}, [], "acc") == 0.1  # any metric's own key


def test_confirm_entries_read_the_list_and_its_seeds_sample_std():
    entries = N.confirm_entries([confirm_item({"optimizer": {"lr": 1e-4}, "seed": 3})])
    assert len(entries) == 1
    entry = entries[0]
    assert entry.config == {"optimizer.lr": 1e-4, "seed": 3}  # nested keys flattened
    assert (entry.objectives, entry.mean, entry.ci95) == ((3.6, 4.0, 4.4), 4.0, (3.0, 5.0))
    assert entry.std == pytest.approx(0.4)
    wrapped = {"k": 1, "configurations": [confirm_item({"optimizer.lr": 1e-4})]}
    assert len(N.confirm_entries(wrapped)) == 1


@pytest.mark.parametrize("content", [
    None, "text", 3, {"configurations": "none"}, [], [{"config": {}}],
    [confirm_item({"a": 1}, objectives=[1.0])],            # one seed: no spread
    [confirm_item({"a": 1}, ci95=[1.0])],
    [confirm_item({"a": 1}, mean="high")],
    [{"objectives": [1.0, 2.0], "mean": 1.5, "ci95": [0, 3]}],
])
def test_a_confirm_json_of_another_shape_is_no_entry(content):
    assert N.confirm_entries(content) == []


def clipsearch_confirm_document(phase="phase1", trial_id="t1", decided=None) -> dict:
    """confirm.json as clipsearch.results.confirm.confirm_document writes it (seed 2 errored)."""
    return {"phase": phase, "metric": "objective", "mode": "max", "epochs": 4, "seeds": [1, 2, 3, 4],
            "configs": [{"rank": 1, "trial_id": trial_id, "decided": decided or {"optimizer.lr": 1e-4},
                         "phase_score": 4.0, "seeds": {"1": 3.6, "2": None, "3": 4.0, "4": 4.4}, "n": 3,
                         "mean": 4.0, "sd": 0.4, "ci95": [3.0, 5.0]}],
            "verdict": {"text": "..."}}


def test_clipsearch_confirms_own_document_is_read_and_matched_by_phase_and_trial():
    entries = N.confirm_entries(clipsearch_confirm_document())
    assert [(e.trial_id, e.phase, e.objectives, e.std) for e in entries] == [("t1", "phase1", (3.6, 4.0, 4.4), 0.4)]
    # decided holds phase 1's lr only, yet the entry names its trial: the band is t1's
    assert N.seed_band(entries, hand_rows(), SEARCHED, "objective", "phase1").seeds == 3
    with pytest.raises(Unavailable):  # the same trial id in another phase is another trial
        N.seed_band(entries, hand_rows(), SEARCHED, "objective", "phase3")
    other = N.confirm_entries(clipsearch_confirm_document(trial_id="t2"))
    with pytest.raises(Unavailable):
        N.seed_band(other, hand_rows(), SEARCHED, "objective", "phase1")


def test_the_band_is_the_confirm_entry_of_the_phases_best_configuration():
    entries = N.confirm_entries([confirm_item({**CONFIGS["t2"], "seed": 1}, objectives=[1, 2, 3], mean=2.0),
                                 confirm_item({**CONFIGS["t1"], "seed": 7})])
    band = N.seed_band(entries, hand_rows(), SEARCHED, "objective")
    assert (band.trial_id, band.score, band.mean, band.seeds, band.ci95) == ("t1", 4, 4.0, 3, (3.0, 5.0))
    assert (band.low, band.high) == pytest.approx((3.6, 4.4))


def test_no_band_when_no_entry_is_the_best_configuration():
    other_lr = {**CONFIGS["t1"], "optimizer.lr": 2e-4}
    missing_a_searched_key = {k: v for k, v in CONFIGS["t1"].items() if k != "optimizer.lr"}
    entries = N.confirm_entries([confirm_item(other_lr), confirm_item(missing_a_searched_key)])
    with pytest.raises(Unavailable, match=r"none of confirm.json's 2 configurations is this phase's best trial's "
                                          r"\(t1\)"):
        N.seed_band(entries, hand_rows(), SEARCHED, "objective")


def test_same_configuration_ignores_the_seed_and_tolerates_float_text():
    trial = {"optimizer.lr": 1e-4, "optimizer.name": "adamw", "seed": 0, "train.epochs": 4}
    assert N.same_configuration({"optimizer.lr": 0.0001, "optimizer.name": "adamw", "seed": 5}, trial, ["optimizer.lr"])
    assert not N.same_configuration({"optimizer.lr": 1e-4, "train.epochs": 10}, trial, ["optimizer.lr"])
    assert not N.same_configuration({"seed": 0}, trial, [])  # nothing but the seed to compare

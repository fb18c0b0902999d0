"""The ranking rule (values compared only at the same epoch) and what phase 1 hands phase 2."""

import math

from clipsearch.results import TrialRecord, carried_from_best, phase2_axes, rank_trials, top_optimizers


def record(trial_id, objectives, status="TERMINATED", **config):
    history = [{"epoch": e + 1, "objective": v} for e, v in enumerate(objectives)]
    return TrialRecord(trial_id, status, config, history)


def test_an_early_stopped_trial_never_wins_on_a_low_epoch_value():
    # b looked best after epoch 1, but a and c went on to epoch 4 (ASHA promoted them)
    a = record("a", [5.0, 6.0, 7.0, 8.0])
    b = record("b", [9.0])
    c = record("c", [4.0, 5.0, 6.0, 9.5])
    ranked = rank_trials([a, b, c], "objective")
    assert [r.record.trial_id for r in ranked] == ["c", "a", "b"]
    assert [r.reach for r in ranked] == [4, 4, 1]


def test_trials_that_reached_the_same_epoch_are_compared_by_their_best_epoch():
    late_peak = record("late", [3.0, 4.0, 9.0, 5.0])   # best epoch 3, last value 5
    steady = record("steady", [3.0, 4.0, 6.0, 7.0])
    ranked = rank_trials([steady, late_peak], "objective")
    assert ranked[0].record.trial_id == "late" and ranked[0].score == 9.0
    assert late_peak.best_row("objective")["epoch"] == 3


def test_errored_and_silent_trials_are_not_ranked():
    ok = record("ok", [1.0, 2.0])
    errored = record("err", [50.0], status="ERROR")
    silent = record("silent", [])
    assert [r.record.trial_id for r in rank_trials([errored, ok, silent], "objective")] == ["ok"]


def test_nan_values_never_win():
    nan = record("nan", [float("nan"), float("nan")])
    ok = record("ok", [1.0, 2.0])
    assert rank_trials([nan, ok], "objective")[0].record.trial_id == "ok"
    assert nan.score("objective") == -math.inf


RANKED = [  # phase 1 trials, best first, as read from trials.csv
    {"config": {"optimizer.name": "radam", "optimizer.lr": 1e-3, "loss.name": "isogclr", "loss.eta": 0.02,
                "loss.gamma": 0.9, "model.embed_dim": 128, "train.epochs": 4}},
    {"config": {"optimizer.name": "radam", "optimizer.lr": 5e-3, "loss.name": "sogclr", "loss.gamma": 0.7,
                "model.embed_dim": 64, "train.epochs": 4}},
    {"config": {"optimizer.name": "adamw", "optimizer.lr": 2e-3, "loss.name": "sogclr", "loss.gamma": 0.6,
                "model.embed_dim": 64, "train.epochs": 4}},
    {"config": {"optimizer.name": "momentum", "optimizer.lr": 9e-3, "optimizer.momentum": 0.95,
                "loss.name": "isogclr", "loss.eta": 0.05, "loss.gamma": 0.5, "model.embed_dim": 64, "train.epochs": 4}},
    {"config": {"optimizer.name": "adam", "optimizer.lr": 1e-4, "loss.name": "isogclr", "loss.gamma": 0.5,
                "model.embed_dim": 64, "train.epochs": 4}},
]
SEARCHED = {"optimizer.name", "optimizer.lr", "optimizer.momentum", "loss.name", "loss.eta", "loss.gamma",
            "model.embed_dim"}


def test_top_optimizers_are_the_best_distinct_ones_each_from_its_best_trial():
    picks = top_optimizers(RANKED, 3)
    assert [name for name, _ in picks] == ["radam", "adamw", "momentum"]
    assert picks[0][1]["optimizer.lr"] == 1e-3


def test_phase2_axes_carry_each_optimizer_and_loss_from_its_best_trial_but_no_constants():
    axes = phase2_axes(RANKED, 3, ["sogclr", "isogclr", "isogclr_v2"], SEARCHED)
    assert axes["optimizer"] == [
        {"optimizer.name": "radam", "optimizer.lr": 1e-3},
        {"optimizer.name": "adamw", "optimizer.lr": 2e-3},
        {"optimizer.name": "momentum", "optimizer.lr": 9e-3, "optimizer.momentum": 0.95},
    ]
    assert axes["loss"] == [
        {"loss.name": "sogclr", "loss.gamma": 0.7},
        {"loss.name": "isogclr", "loss.eta": 0.02, "loss.gamma": 0.9},
        {"loss.name": "isogclr_v2"},  # phase 1 never ran it: its defaults
    ]
    assert carried_from_best(RANKED, SEARCHED) == {"model.embed_dim": 128}  # not train.epochs


def test_under_mode_min_the_lowest_value_wins_at_the_same_epoch():
    def losses(trial_id, values, **config):
        return TrialRecord(trial_id, "TERMINATED", config, [{"epoch": e + 1, "train_loss": v} for e, v in enumerate(values)])

    low, high, short = losses("low", [0.9, 0.2, 0.4]), losses("high", [0.8, 0.5, 0.6]), losses("short", [0.1])
    ranked = rank_trials([high, short, low], "train_loss", mode="min")
    assert [r.record.trial_id for r in ranked] == ["low", "high", "short"]  # reach first, as for max
    assert ranked[0].score == 0.2 and low.best_row("train_loss", "min")["epoch"] == 2
    assert losses("nan", [float("nan")]).score("train_loss", "min") == math.inf  # never the best

"""The statistics of `clipsearch confirm` on hand-made numbers: the mean, the Student t 95%
interval over seeds, the pooled sd and the verdict (lead > pooled sd), and the files it writes."""

import json
import math

import pytest

from clipsearch.results.confirm import (RULE, ConfirmedConfig, SeedSummary, confirm_document, confirm_markdown,
                                        confirm_table, pooled_sd, summarize, t_quantile, verdict, write_confirm)


def test_t_quantiles_are_students_two_sided_95_percent_values():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)  # 3 seeds: the interval is mean +- 2.48 sd
    assert t_quantile(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)  # the normal's, for many seeds


def test_the_interval_of_three_seeds_is_the_mean_plus_minus_t_sd_over_root_n():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)  # sample sd: divided by n - 1
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert s.low == pytest.approx(2.0 - half, abs=1e-5) and s.high == pytest.approx(2.0 + half, abs=1e-5)


def test_one_value_has_a_mean_but_no_spread_and_none_has_neither():
    one = summarize([5.0])
    assert one.mean == 5.0 and one.sd is None and one.low is None and one.high is None
    assert summarize([]).mean is None


def test_pooled_sd_weighs_each_sd_by_its_degrees_of_freedom():
    a, b = summarize([1.0, 2.0, 3.0]), summarize([2.0, 4.0, 6.0])  # sd 1 and 2
    assert pooled_sd(a, b) == pytest.approx(math.sqrt((2 * 1 + 2 * 4) / 4))
    c = summarize([0.0, 2.0])  # sd sqrt(2), 1 degree of freedom
    assert pooled_sd(a, c) == pytest.approx(math.sqrt((2 * 1 + 1 * 2) / 3))


LABELS = ["#1 (trial a)", "#2 (trial b)", "#3 (trial c)"]


def test_a_lead_larger_than_the_seed_spread_holds():
    judged = verdict([summarize([10.0, 10.5, 11.0]), summarize([8.0, 8.5, 9.0]), summarize([7.0, 7.5, 8.0])], LABELS)
    assert (judged.winner, judged.runner_up, judged.clear) == (0, 1, True)
    assert judged.lead == pytest.approx(2.0) and judged.spread == pytest.approx(0.5)
    assert "#1 (trial a) leads #2 (trial b) by 2" in judged.text and "the lead holds" in judged.text


def test_a_lead_within_the_seed_spread_is_not_confirmed():
    judged = verdict([summarize([10.0, 10.5, 11.0]), summarize([9.7, 10.2, 10.7])], LABELS[:2])
    assert judged.clear is False and judged.lead == pytest.approx(0.3) and judged.spread == pytest.approx(0.5)
    assert "not confirmed at 3 seeds" in judged.text


def test_the_winner_is_the_best_mean_on_new_seeds_and_a_changed_order_is_said():
    judged = verdict([summarize([8.0, 8.5, 9.0]), summarize([10.0, 10.5, 11.0])], LABELS[:2])
    assert (judged.winner, judged.runner_up) == (1, 0)
    assert "the phase's own winner, #1 (trial a), is not the best on new seeds" in judged.text


def test_a_minimised_metric_makes_the_lowest_mean_the_winner():
    judged = verdict([summarize([3.0, 3.1, 3.2]), summarize([1.0, 1.1, 1.2])], LABELS[:2], mode="min")
    assert judged.winner == 1 and judged.lead == pytest.approx(2.0) and judged.clear is True


def test_without_two_seeds_on_both_sides_the_verdict_is_undecided():
    judged = verdict([summarize([10.0, 11.0]), summarize([9.0])], LABELS[:2])
    assert judged.clear is None and "#2 (trial b) finished fewer than 2 seeds" in judged.text
    alone = verdict([summarize([10.0, 11.0])], LABELS[:1])
    assert alone.clear is None and alone.runner_up is None and "no runner-up" in alone.text
    none = verdict([SeedSummary((), None, None, None, None)], LABELS[:1])
    assert none.winner is None and "undecided" in none.text


def configs():
    return [ConfirmedConfig(1, "a", {"optimizer.lr": 0.002}, 12.0, {8: 10.0, 9: 10.5, 10: 11.0}),
            ConfirmedConfig(2, "b", {"optimizer.lr": 0.01}, 11.0, {8: 8.0, 9: None, 10: 9.0})]


def test_the_document_holds_every_seed_each_summary_the_rule_and_the_verdict():
    doc = confirm_document("phase1", "objective", "max", 2, configs())
    assert doc["seeds"] == [8, 9, 10] and doc["rule"] == RULE and doc["epochs"] == 2
    first, second = doc["configs"]
    assert first["mean"] == pytest.approx(10.5) and first["ci95"][0] < 10.5 < first["ci95"][1]
    assert second["n"] == 2 and second["seeds"]["9"] is None  # the errored seed is kept, not counted
    assert doc["verdict"]["clear"] is True and doc["verdict"]["winner"] == 0
    assert "wide" in doc["note"] and "4.30" in doc["note"]  # 3 seeds: t at 2 degrees of freedom


def test_confirm_json_and_md_are_written_and_say_the_rule_and_verdict(tmp_path):
    doc = confirm_document("phase1", "objective", "max", 2, configs())
    write_confirm(tmp_path, doc)
    assert json.loads((tmp_path / "confirm.json").read_text()) == json.loads(json.dumps(doc))
    text = (tmp_path / "confirm.md").read_text()
    assert "| 1 | a | 12 | 3/3 | 10.5 | 0.5 |" in text and "| 2 | b | 11 | 2/3 |" in text
    assert f"Rule: {RULE}." in text and f"**Verdict**: {doc['verdict']['text']}." in text
    assert confirm_markdown(doc) == text
    table = confirm_table(doc).splitlines()
    assert len(table) == 3 and "optimizer.lr=0.002" in table[1] and "[" in table[1]

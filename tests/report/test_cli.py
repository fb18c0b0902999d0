"""`clipsearch report PATH` through the console script's entry point (main()), in this process."""

import sys

import pytest

from clipsearch import cli


def invoke(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["clipsearch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr()


def test_a_folder_that_is_not_an_experiment_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "report", tmp_path)
    assert code == 2
    assert out.err.count("\n") == 1 and "not an experiment or a phase" in out.err and "Traceback" not in out.err
    assert list(tmp_path.iterdir()) == []


def test_a_phase_folder_gets_its_report_and_the_path_is_printed(hand_phase, monkeypatch, capsys):
    monkeypatch.setattr("clipsearch.report.pages.write_pngs", lambda jobs, folders: [])
    code, out = invoke(monkeypatch, capsys, "report", hand_phase)
    assert code in (0, None)
    assert out.out.strip() == str(hand_phase / "report.html")
    assert (hand_phase / "importance.json").is_file()

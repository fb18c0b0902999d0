"""Faults a long search meets, without Ray: a truncated checkpoint, a full disk, a checkpoint
that would run code, an infinite loss. Each names what must survive it.

The full disk is a file-size limit (RLIMIT_FSIZE) with SIGXFSZ ignored: the kernel then fails
the write with EFBIG, as a full disk fails it with ENOSPC; both reach the same code.

Each test is a case of `clipsearch bench reliability`'s census, filed under the category its
census marker names (clipsearch.bench.census).
"""

import errno
import os

import pytest
import torch

from clipsearch.errors import InputError
from clipsearch.checkpoints import (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, RunState, atomic_save,
                                    read_checkpoint, save_checkpoint)
from clipsearch.train import NonFiniteLossError
from clipsearch.results import atomic_write_text


class Schedule:
    """The part of clipsearch's schedules that checkpoints touch."""

    def state_dict(self):
        return {"step": 0}


def save_epoch(directory, epoch):
    model, generator = torch.nn.Linear(4, 2), torch.Generator().manual_seed(epoch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(directory, model, torch.nn.Identity(), optimizer, Schedule(), generator, RunState(epoch=epoch))


@pytest.mark.census("trial faults")
@pytest.mark.parametrize("damage", ["cut in half", "empty", "deleted"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_epoch(tmp_path, damage, caplog):
    save_epoch(tmp_path, 1)
    save_epoch(tmp_path, 2)
    latest = tmp_path / CHECKPOINT_FILE
    assert read_checkpoint(tmp_path)["state"]["epoch"] == 2
    if damage == "deleted":
        latest.unlink()
    else:
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2 if damage == "cut in half" else 0])
    assert read_checkpoint(tmp_path)["state"]["epoch"] == 1
    assert PREVIOUS_CHECKPOINT_FILE in caplog.text  # the fallback is said, not silent


@pytest.mark.census("trial faults")
def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    save_epoch(tmp_path, 1)
    save_epoch(tmp_path, 2)
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        (tmp_path / name).write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(InputError, match="no readable checkpoint") as caught:
        read_checkpoint(tmp_path)
    assert str(tmp_path) in caught.value.one_line() and "fix:" in caught.value.one_line()


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls os.system: what weights_only must refuse
        return os.system, (f"touch {self.marker}",)


@pytest.mark.census("security")
def test_a_checkpoint_holding_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    save_epoch(tmp_path, 1)  # a good previous checkpoint: refusal must not quietly fall back to it
    torch.save({"state": RunsCode(marker)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(InputError, match="refused"):
        read_checkpoint(tmp_path)
    assert not marker.exists()


@pytest.mark.census("disk full")
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(tmp_path, file_size_limit):
    save_epoch(tmp_path, 1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with file_size_limit(64 * 1024), pytest.raises(OSError) as caught:
        atomic_save({"big": torch.ones(100_000)}, tmp_path / CHECKPOINT_FILE)  # 400 kB
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(tmp_path / CHECKPOINT_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file left behind
    assert read_checkpoint(tmp_path)["state"]["epoch"] == 1


@pytest.mark.census("disk full")
def test_a_full_disk_while_writing_results_keeps_the_earlier_file(tmp_path, file_size_limit):
    target = tmp_path / "trials.csv"
    atomic_write_text(target, "trial_id,status\na,TERMINATED\n")
    with file_size_limit(64 * 1024), pytest.raises(OSError) as caught:
        atomic_write_text(target, "x" * 200_000)
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(target)
    assert target.read_text() == "trial_id,status\na,TERMINATED\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


@pytest.mark.census("disk full")
def test_a_full_disk_reaches_the_user_as_one_line_and_exit_1(monkeypatch, capsys):
    from clipsearch import cli

    def full(**_):
        raise OSError(errno.ENOSPC, "No space left on device", "results/exp/phase1/trials.csv")

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1 and len(lines) == 1
    assert "results/exp/phase1/trials.csv" in lines[0] and "No space left" in lines[0] and "fix:" in lines[0]


@pytest.mark.census("trial faults")
def test_an_infinite_loss_stops_training_at_once(monkeypatch):
    """The NaN case is tests/test_train.py::test_non_finite_loss_stops_training_at_once."""
    from clipsearch.config import load_config
    from clipsearch.losses.clip import ClipLoss
    from clipsearch.train import train

    calls, original = [], ClipLoss.forward

    def inf_on_second_step(self, *args, **kwargs):
        calls.append(1)
        out = original(self, *args, **kwargs)
        if len(calls) == 2:
            out["loss"] = out["loss"] * torch.tensor(float("inf"))
        return out

    monkeypatch.setattr(ClipLoss, "forward", inf_on_second_step)
    cfg = load_config(quick=True, overrides=["data.fraction=0.1", "train.batch_size=32", "train.epochs=1",
                                             "train.threads=1", "eval.batch_size=1024"])
    with pytest.raises(NonFiniteLossError, match="inf at epoch 1, step 2"):
        train(cfg)
    assert len(calls) == 2  # not trained on for the rest of the epoch

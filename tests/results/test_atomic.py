"""The one atomic write: a reader sees the old file or the new one, never half of either; a
failed write (a full disk) keeps the old file, leaves no temporary file and names the target."""

import errno

import numpy as np
import pytest

from clipsearch.results import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text

OLD = "trial_id,status\na,TERMINATED\n"


def torch_save(obj):
    import torch

    return lambda file: torch.save(obj, file)


def big_tensor():
    import torch

    return {"big": torch.ones(100_000)}  # 400 kB


WRITES = {
    "text": lambda path: atomic_write_text(path, "x" * 200_000),
    "bytes": lambda path: atomic_write_bytes(path, b"x" * 200_000),
    "torch.save": lambda path: atomic_write(path, torch_save(big_tensor())),
    "np.savez": lambda path: atomic_write(path, lambda file: np.savez(file, a=np.ones(50_000))),
}


@pytest.mark.parametrize("how", list(WRITES))
def test_a_full_disk_keeps_the_earlier_file_and_names_the_target(tmp_path, how, file_size_limit):
    target = tmp_path / "trials.csv"
    atomic_write_text(target, OLD)
    with file_size_limit(64 * 1024), pytest.raises(OSError) as caught:
        WRITES[how](target)
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(target)
    assert target.read_text() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]  # no temporary file left behind


@pytest.mark.parametrize("how", list(WRITES))
def test_a_write_replaces_the_file_whole_and_leaves_only_it(tmp_path, how):
    target = tmp_path / "sub" / "file.bin"  # a missing folder is made
    WRITES[how](target)
    assert target.stat().st_size > 100_000
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_a_checkpoint_written_through_a_callback_loads_back(tmp_path):
    import torch

    atomic_write(tmp_path / "state.pt", torch_save({"epoch": 3, "w": torch.arange(4)}))
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    assert saved["epoch"] == 3 and saved["w"].tolist() == [0, 1, 2, 3]


def test_a_writer_that_raises_leaves_the_old_file_and_its_own_error(tmp_path):
    target = tmp_path / "best.json"
    atomic_write_text(target, "{}")

    def broken(file):
        file.write(b'{"half": ')
        raise ValueError("not serialisable")

    with pytest.raises(ValueError, match="not serialisable"):
        atomic_write(target, broken)
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_atomic_path_gives_a_hidden_temporary_path_with_the_targets_suffix(tmp_path):
    target = tmp_path / "key.npy"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".") and temp.suffix == ".npy"
        np.save(temp, np.arange(3))  # np.save adds .npy to a path without it: the name must keep it
        assert not target.exists()  # nothing is in place before the block ends
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["key.npy"]


def test_atomic_path_with_nothing_written_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(OSError) as caught, atomic_path(tmp_path / "x.json"):
        pass  # the writer made no file: the rename has nothing to move
    assert caught.value.filename == str(tmp_path / "x.json") and not list(tmp_path.iterdir())

"""Each reader round-trips tiny files made here, and each bad input names its file."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from clipsearch.data import readers
from clipsearch.data.readers import (
    CaptionRow,
    group_by_image,
    load_coco_set,
    load_image_folder_set,
    load_image_text_set,
    read_caption_rows,
    read_coco_captions,
    read_image_folder,
    read_webdataset,
)
from clipsearch.errors import InputError

S = 8
RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


def save_image(path, color, size=(12, 9), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def image_bytes(color, fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", (10, 14), color).save(buffer, fmt)
    return buffer.getvalue()


def colour_of(images, i):
    return tuple(int(v) for v in images[i, S // 2, S // 2])


def near(actual, expected, tolerance=8):  # JPEG shifts colours a little
    return max(abs(a - e) for a, e in zip(actual, expected)) <= tolerance


@pytest.fixture
def two_images(tmp_path):
    save_image(tmp_path / "img" / "red.png", RED)
    save_image(tmp_path / "img" / "green.jpg", GREEN, size=(20, 31))
    return tmp_path


ROWS = [
    {"image": "img/red.png", "caption": "a red square"},
    {"image": "img/green.jpg", "caption": "a green square"},
    {"image": "img/red.png", "caption": "something red"},
]


def write_rows(path, rows, columns=("image", "caption")):
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            delimiter = "\t" if path.suffix == ".tsv" else ","
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(columns)
            writer.writerows([[row.get(c, "") for c in columns] for row in rows])
    return path


def load(path, **kwargs):
    """load_image_text_set with a cache beside the file and no progress bar."""
    kwargs.setdefault("cache_dir", path.parent / "cache")
    return load_image_text_set(path, S, progress=False, **kwargs)


# --------------------------------------------------------------------------- caption rows


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".tsv"])
def test_caption_rows_round_trip_with_captions_grouped_by_image(two_images, suffix):
    data = load(write_rows(two_images / f"pairs{suffix}", ROWS))
    assert data.names == ["img/red.png", "img/green.jpg"]
    assert data.captions == [["a red square", "something red"], ["a green square"]]
    assert data.images.shape == (2, S, S, 3) and data.labels is None
    assert colour_of(data.images, 0) == RED and near(colour_of(data.images, 1), GREEN)


def test_course_format_groups_rows_by_image_id(two_images):
    rows = [{"image": "img/red.png", "caption": "one", "image_id": 7},
            {"image": "img/green.jpg", "caption": "two", "image_id": 8},
            {"image": "./img/red.png", "caption": "three", "image_id": 7}]
    paths, captions = group_by_image(read_caption_rows(write_rows(two_images / "c.json", rows)),
                                     two_images)
    assert captions == [["one", "three"], ["two"]]
    assert paths == [str(two_images / "img" / "red.png"), str(two_images / "img" / "green.jpg")]


def test_one_image_id_for_two_images_is_refused(two_images):
    rows = [CaptionRow("img/red.png", "a", "1", "f line 2"),
            CaptionRow("img/green.jpg", "b", "1", "f line 3")]
    with pytest.raises(InputError, match="f line 3.*image_id '1' names two images"):
        group_by_image(rows, two_images)


@pytest.mark.parametrize("image_column, caption_column",
                         [("filepath", "text"), ("Image_Path", "Title"), ("file", "caption")])
def test_accepted_column_names_in_any_case(two_images, image_column, caption_column):
    path = two_images / "pairs.csv"
    path.write_text(f"{image_column},{caption_column},url\nimg/red.png,red thing,http://x\n")
    assert read_caption_rows(path) == [CaptionRow("img/red.png", "red thing", None,
                                                  f"{path} line 2")]


def test_utf8_with_byte_order_mark_keeps_accents(two_images):
    path = two_images / "pairs.csv"
    path.write_bytes("\ufeffimage,caption\nimg/red.png,café rouge\n".encode("utf-8"))
    assert read_caption_rows(path)[0].caption == "café rouge"


def test_latin1_csv_is_refused_naming_the_line(two_images):
    path = two_images / "pairs.csv"
    path.write_bytes(b"image,caption\nimg/red.png,red\nimg/red.png,caf\xe9\n")
    with pytest.raises(InputError, match=r"pairs\.csv: not UTF-8 text \(byte b'\\xe9' on line 3"):
        read_caption_rows(path)


def test_image_root_overrides_the_caption_files_folder(two_images):
    rows = [{"image": "red.png", "caption": "red"}]
    (two_images / "meta").mkdir()
    data = load(write_rows(two_images / "meta" / "p.jsonl", rows), image_root=two_images / "img")
    assert data.names == ["red.png"] and colour_of(data.images, 0) == RED


@pytest.mark.parametrize("name", ["gone.csv", "gone.json", "gone.jsonl"])
def test_missing_caption_file_is_named(tmp_path, name):
    with pytest.raises(InputError, match=f"{name}: file not found"):
        load(tmp_path / name)


def test_not_json_is_named_with_its_position(tmp_path):
    (tmp_path / "bad.json").write_text('[{"image": "a.png",, }]')
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON .*line 1 column"):
        load(tmp_path / "bad.json")


def test_json_lines_in_a_json_file_suggests_jsonl(tmp_path):
    write_rows(tmp_path / "rows.jsonl", ROWS).rename(tmp_path / "rows.json")
    with pytest.raises(InputError, match=r"rows\.json: not valid JSON.*must be named \.jsonl"):
        load(tmp_path / "rows.json")


def test_bad_jsonl_line_is_named(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{oops\n')
    with pytest.raises(InputError, match=r"r\.jsonl line 2: not valid JSON"):
        read_caption_rows(tmp_path / "r.jsonl")


def test_wrong_columns_say_which_were_found_and_which_are_accepted(tmp_path):
    (tmp_path / "cc3m.tsv").write_text("url\tdescription\nhttp://a/b.jpg\ta dog\n")
    with pytest.raises(InputError) as raised:
        read_caption_rows(tmp_path / "cc3m.tsv")
    message = str(raised.value)
    assert "cc3m.tsv line 2" in message and "found: url, description" in message
    assert "image, filepath, file, image_path" in message and "caption, text, title" in message
    assert "img2dataset" in message  # a url column: the images are not downloaded yet


@pytest.mark.parametrize("suffix, rows, where", [
    (".csv", [ROWS[0], {"image": "img/red.png", "caption": "  "}], "line 3"),
    (".jsonl", [ROWS[0], {"image": "img/red.png", "caption": ""}], "line 2"),
    (".json", [ROWS[0], {"image": "img/red.png"}], r"item \[1\]"),
])
def test_empty_or_missing_caption_names_the_row(tmp_path, suffix, rows, where):
    path = write_rows(tmp_path / f"p{suffix}", rows)
    with pytest.raises(InputError, match=rf"p\{suffix} {where}: .*caption"):
        read_caption_rows(path)


def test_caption_file_without_rows_is_refused(tmp_path):
    (tmp_path / "p.csv").write_text("image,caption\n")
    with pytest.raises(InputError, match="p.csv: holds no caption rows"):
        read_caption_rows(tmp_path / "p.csv")


def test_missing_image_file_is_named_with_its_row(two_images):
    rows = [ROWS[0], {"image": "img/nope.png", "caption": "gone"}]
    with pytest.raises(InputError) as raised:
        load(write_rows(two_images / "p.csv", rows))
    message = str(raised.value)
    assert "nope.png: image file not found" in message and "p.csv line 3" in message


def test_unknown_file_type_lists_what_is_read(tmp_path):
    (tmp_path / "pairs.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match=r"pairs\.parquet: not a data set.*\.jsonl"):
        load(tmp_path / "pairs.parquet")


# --------------------------------------------------------------------------- COCO


def write_karpathy(folder):
    save_image(folder / "val2014" / "r.png", RED)
    save_image(folder / "val2014" / "g.png", GREEN)
    save_image(folder / "train2014" / "b.png", BLUE)
    images = [
        {"filepath": "val2014", "filename": "r.png", "split": "test",
         "sentences": [{"raw": "red one", "tokens": ["red", "one"]}, {"raw": " red two "}]},
        {"filepath": "val2014", "filename": "g.png", "split": "val",
         "sentences": [{"tokens": ["green", "one"]}]},
        {"filepath": "train2014", "filename": "b.png", "split": "train",
         "sentences": [{"raw": "blue one"}]},
    ]
    path = folder / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def write_official(folder, annotations=None):
    save_image(folder / "val2017" / "000001.png", RED)
    save_image(folder / "val2017" / "000002.png", GREEN)
    images = [{"id": 1, "file_name": "000001.png"}, {"id": 2, "file_name": "000002.png"}]
    annotations = annotations or [{"image_id": 2, "id": 10, "caption": "green a"},
                                  {"image_id": 1, "id": 11, "caption": "red a"},
                                  {"image_id": 2, "id": 12, "caption": "green b"}]
    (folder / "annotations").mkdir()
    path = folder / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_karpathy_file_round_trips_every_split_by_default(tmp_path):
    data = load(write_karpathy(tmp_path))
    assert data.names == ["val2014/r.png", "val2014/g.png", "train2014/b.png"]
    assert data.captions == [["red one", "red two"], ["green one"], ["blue one"]]
    assert [colour_of(data.images, i) for i in range(3)] == [RED, GREEN, BLUE]


def test_karpathy_split_keeps_only_that_split(tmp_path):
    path = write_karpathy(tmp_path)
    assert read_coco_captions(path, split="test")[1] == [["red one", "red two"]]
    assert len(read_coco_captions(path, split=["test", "val"])[0]) == 2
    coco_set = load_coco_set(path, S, tmp_path / "cache", progress=False)  # default: test
    assert coco_set.names == ["val2014/r.png"]


def test_unknown_karpathy_split_lists_the_splits_found(tmp_path):
    with pytest.raises(InputError, match=r"no images in split \['restval'\].*'test', 'train'"):
        read_coco_captions(write_karpathy(tmp_path), split="restval")


def test_official_coco_file_groups_annotations_by_image(tmp_path):
    path = write_official(tmp_path)
    data = load(path, image_root=tmp_path / "val2017")
    assert data.names == ["000001.png", "000002.png"]
    assert data.captions == [["red a"], ["green a", "green b"]]
    assert colour_of(data.images, 1) == GREEN
    assert load_coco_set(path, S, tmp_path / "c", tmp_path / "val2017", progress=False).names == (
        data.names)  # the default split does not apply to an official file


def test_official_coco_annotation_of_an_unknown_image_is_named(tmp_path):
    path = write_official(tmp_path, [{"image_id": 99, "caption": "who"}])
    with pytest.raises(InputError, match=r"annotations\[0\]: image_id 99 is not in 'images'"):
        read_coco_captions(path, tmp_path / "val2017")


def test_official_coco_image_without_a_caption_is_dropped_with_a_warning(tmp_path):
    path = write_official(tmp_path, [{"image_id": 2, "caption": "green"}])
    with pytest.warns(UserWarning, match="dropped 1 images without a caption"):
        paths, captions = read_coco_captions(path, tmp_path / "val2017")
    assert captions == [["green"]] and paths[0].endswith("000002.png")


def test_coco_images_missing_under_the_default_root_are_named(tmp_path):
    with pytest.raises(InputError, match=r"000001\.png: image file not found.*images\[0\]"):
        read_coco_captions(write_official(tmp_path))  # images live in val2017/, not annotations/


# --------------------------------------------------------------------------- webdataset


def write_shards(folder, samples_per_shard):
    """img2dataset's layout: KEY.jpg|png + KEY.txt + KEY.json per sample, 2 shards."""
    folder.mkdir(exist_ok=True)
    for shard, samples in enumerate(samples_per_shard):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for key, members in samples:
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def sample(key, color, caption, fmt="jpg"):
    members = {fmt: image_bytes(color, "JPEG" if fmt == "jpg" else fmt.upper())}
    if caption is not None:
        members["txt"] = caption.encode()
    members["json"] = json.dumps({"key": key, "caption": caption, "status": "success"}).encode()
    return key, members


SHARDS = [
    [sample("000000000", RED, "red photo"), sample("000000001", GREEN, "green photo", "png")],
    [sample("000010000", BLUE, "blue photo", "webp")],
]


@pytest.mark.parametrize("spec", ["shards/{00000..00001}.tar", "shards/*.tar", "shards",
                                  ["shards/00000.tar", "shards/00001.tar"]])
def test_webdataset_shards_round_trip(tmp_path, monkeypatch, spec):
    write_shards(tmp_path / "shards", SHARDS)
    monkeypatch.chdir(tmp_path)
    data = load_image_text_set(spec, S, tmp_path / "cache", progress=False)
    assert data.names == ["000000000", "000000001", "000010000"]
    assert data.captions == [["red photo"], ["green photo"], ["blue photo"]]
    assert near(colour_of(data.images, 0), RED) and colour_of(data.images, 1) == GREEN
    assert near(colour_of(data.images, 2), BLUE)


def test_webdataset_cache_hit_reads_no_image_bytes(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", SHARDS)
    read_webdataset(str(shards), S, tmp_path / "cache", progress=False)
    streamed = []
    original = readers._stream_images
    monkeypatch.setattr(readers, "_stream_images",
                        lambda *args: streamed.append(args) or original(*args))
    again = read_webdataset(str(shards), S, tmp_path / "cache", progress=False)
    assert streamed == [] and len(again) == 3


def test_webdataset_caption_falls_back_to_the_json(tmp_path):
    key, members = sample("000000005", RED, "from json")
    del members["txt"]
    data = read_webdataset(str(write_shards(tmp_path / "s", [[(key, members)]])), S,
                           tmp_path / "cache", progress=False)
    assert data.captions == [["from json"]]


def test_webdataset_sample_without_caption_is_named_then_skippable(tmp_path):
    shards = write_shards(tmp_path / "s", [[sample("000000000", RED, "ok"),
                                            sample("000000001", GREEN, None)]])
    with pytest.raises(InputError, match=r"00000\.tar:000000001: incomplete sample: no caption"):
        read_webdataset(str(shards), S, tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="skipped 1 of 2 webdataset samples"):
        data = read_webdataset(str(shards), S, tmp_path / "cache", "skip", progress=False)
    assert data.names == ["000000000"] and data.skipped == [f"{shards}/00000.tar:000000001"]


def test_webdataset_corrupt_image_is_skipped_and_counted(tmp_path):
    key, members = sample("000000001", GREEN, "broken")
    members["jpg"] = members["jpg"][:100]
    shards = write_shards(tmp_path / "s", [[sample("000000000", RED, "ok"), (key, members)]])
    with pytest.raises(InputError, match=r"00000\.tar:000000001\.jpg: cannot decode.*skip"):
        read_webdataset(str(shards), S, tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="skipped 1 of 2 images"):
        data = read_webdataset(str(shards), S, tmp_path / "cache", "skip", progress=False)
    assert data.names == ["000000000"] and len(data.skipped) == 1


def test_missing_shard_of_a_brace_pattern_is_named(tmp_path):
    write_shards(tmp_path / "s", SHARDS)
    with pytest.raises(InputError, match=r"00002\.tar: shard not found \(1 of 3"):
        read_webdataset(str(tmp_path / "s" / "{00000..00002}.tar"), S, tmp_path / "c")


def test_not_a_tar_file_is_named(tmp_path):
    (tmp_path / "00000.tar").write_text("plain text")
    with pytest.raises(InputError, match=r"00000\.tar: not a readable tar file"):
        read_webdataset(str(tmp_path / "00000.tar"), S, tmp_path / "c")


# --------------------------------------------------------------------------- ImageFolder


def make_folder_tree(root):
    save_image(root / "zebra" / "1.png", BLUE)
    save_image(root / "apple" / "b.png", RED)
    save_image(root / "apple" / "nested" / "a.JPG", RED, fmt="JPEG")
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / "apple" / "._b.png").write_bytes(b"macOS resource fork")
    return root


def test_image_folder_round_trips_with_sorted_classes_and_labels(tmp_path):
    data = load_image_folder_set(make_folder_tree(tmp_path / "val"), S, tmp_path / "cache",
                                 progress=False)
    assert data.class_names == ["apple", "zebra"]
    assert data.names == ["apple/b.png", "apple/nested/a.JPG", "zebra/1.png"]
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 0, 1]
    assert data.captions == [["apple"], ["apple"], ["zebra"]]
    assert colour_of(data.images, 0) == RED and colour_of(data.images, 2) == BLUE


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder_tree(tmp_path / "val")
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"empty: class folder holds no images \(\.jpg"):
        read_image_folder(root)


def test_folder_without_class_folders_is_refused(tmp_path):
    save_image(tmp_path / "flat" / "a.png", RED)
    with pytest.raises(InputError, match=r"flat: found 0 class folders.*root/<class name>/"):
        read_image_folder(tmp_path / "flat")


def test_min_classes_refuses_a_single_class(tmp_path):
    save_image(tmp_path / "one" / "cat" / "a.png", RED)
    assert read_image_folder(tmp_path / "one")[2] == ["cat"]
    with pytest.raises(InputError, match="found 1 class folders, need at least 2"):
        read_image_folder(tmp_path / "one", min_classes=2)


def test_missing_image_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="nowhere: folder not found"):
        read_image_folder(tmp_path / "nowhere")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlink_loop_in_an_image_folder_finishes_without_duplicates(tmp_path):
    root = make_folder_tree(tmp_path / "val")
    os.symlink(root / "apple", root / "apple" / "nested" / "loop")
    os.symlink(root, root / "zebra" / "up")
    paths, labels, _ = read_image_folder(root)
    assert [os.path.relpath(p, root) for p in paths] == [
        "apple/b.png", os.path.join("apple", "nested", "a.JPG"), "zebra/1.png"]

"""Query and gallery sets: the embedded cross-domain task, labelled folders, a labels file, and
the bad inputs (unlabelled query folder, empty gallery, missing label rows)."""

import numpy as np
import pytest
from PIL import Image

from clipsearch.data.embedded import mnist_splits
from clipsearch.data.labelled import mnist_labelled_splits
from clipsearch.data.querygallery import embedded_query_gallery, load_query_gallery
from clipsearch.errors import InputError


def save(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 10, 3), value, dtype=np.uint8)).save(path)


def load(tmp_path, labels=None):
    return load_query_gallery(str(tmp_path / "query"), str(tmp_path / "gallery"), labels, 16,
                              str(tmp_path / "cache"))


def test_embedded_queries_are_the_other_domain_and_the_gallery_is_never_trained_on():
    sets = embedded_query_gallery(28)
    assert len(sets.query) == 1797 and all(n.startswith("sklearn_digits/") for n in sets.query.names)
    _, held_out = mnist_splits(28)
    assert sets.gallery.names == held_out.names and len(sets.gallery) == 1000
    splits = mnist_labelled_splits(28)
    trained_on = set(splits.train.names) | set(splits.val.names)
    assert not trained_on & set(sets.gallery.names)
    query_labels, gallery_labels = sets.labels()
    # the same digit is the same id on both sides
    assert np.array_equal(np.unique(query_labels), np.arange(10))
    assert [sets.query.class_names[c] for c in sets.query.labels] == [sets.class_names[c] for c in query_labels]
    assert [sets.gallery.class_names[c] for c in sets.gallery.labels] == \
        [sets.class_names[c] for c in gallery_labels]


def test_class_folders_are_matched_by_name_not_by_position(tmp_path):
    save(tmp_path / "query" / "bob" / "q1.png", 10)
    save(tmp_path / "query" / "cy" / "q2.png", 20)
    save(tmp_path / "gallery" / "al" / "g1.png", 30)
    save(tmp_path / "gallery" / "bob" / "g2.png", 40)
    sets = load(tmp_path)
    query_labels, gallery_labels = sets.labels()
    # bob is folder 0 of the queries but folder 1 of the gallery: one id after matching
    assert query_labels[0] == gallery_labels[1]
    assert query_labels[1] not in set(gallery_labels.tolist())  # cy has no match: kept, never hits


def test_flat_folders_take_their_labels_from_the_labels_file(tmp_path):
    save(tmp_path / "query" / "a.png", 10)
    save(tmp_path / "gallery" / "b.png", 20)
    save(tmp_path / "gallery" / "c.png", 30)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nquery/a.png,x\ngallery/b.png,y\ngallery/c.png,x\n")
    sets = load(tmp_path, str(labels))
    query_labels, gallery_labels = sets.labels()
    assert query_labels[0] == gallery_labels[1] != gallery_labels[0]
    assert sets.query.names == ["a.png"] and sets.gallery.names == ["b.png", "c.png"]


def test_a_flat_query_folder_without_labels_is_refused(tmp_path):
    save(tmp_path / "query" / "a.png", 10)
    save(tmp_path / "gallery" / "x" / "b.png", 20)
    with pytest.raises(InputError, match="without labels") as caught:
        load(tmp_path)
    assert "query" in caught.value.where and "retrieval.labels" in caught.value.fix


def test_an_empty_gallery_is_refused(tmp_path):
    save(tmp_path / "query" / "x" / "a.png", 10)
    (tmp_path / "gallery").mkdir()
    with pytest.raises(InputError, match="no images") as caught:
        load(tmp_path)
    assert "gallery" in caught.value.where


def test_an_image_without_a_label_row_is_named(tmp_path):
    save(tmp_path / "query" / "a.png", 10)
    save(tmp_path / "gallery" / "b.png", 20)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nquery/a.png,x\n")
    with pytest.raises(InputError, match="b.png"):
        load(tmp_path, str(labels))


def test_a_labels_file_with_wrong_columns_is_refused(tmp_path):
    save(tmp_path / "query" / "a.png", 10)
    save(tmp_path / "gallery" / "b.png", 20)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,identity\nquery/a.png,x\n")
    with pytest.raises(InputError, match="need file and label"):
        load(tmp_path, str(labels))

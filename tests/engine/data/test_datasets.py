"""Dataset loaders on tiny datasets written in the real formats: labels, splits, sizes, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_datasets import (  # noqa: E402
    CELEBA_ATTRS,
    celeba_value,
    cub_present,
    make_celeba,
    make_celebahq,
    make_cub,
    red_of,
)

from engine.data import ImageReadError, dataset_concepts, dataset_info, open_dataset, to_unit_range  # noqa: E402
from engine.errors import ArtifactMissingError, CorruptFileError, GencbmError, UsageError  # noqa: E402


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENCBM_OFFLINE", "1")


def _red(image: torch.Tensor) -> int:  # uint8 [3, S, S] of a flat colour -> its red value
    return int(image[0].float().mean().round())


# ------------------------------------------------------------------------------------------------
# CelebA-HQ


def test_celebahq_labels_splits_and_size(tmp_path):
    make_celebahq(tmp_path)
    train = open_dataset("celebahq", root=tmp_path, split="train", concepts=["smiling", "wearing-lipstick"])
    test = open_dataset("celebahq", root=tmp_path, split="test", concepts=["Smiling"])
    assert train.concepts == ["Smiling", "Wearing_Lipstick"]  # canonical spelling from the header
    assert len(train) == 6 and len(test) == 3
    s, w = CELEBA_ATTRS.index("Smiling"), CELEBA_ATTRS.index("Wearing_Lipstick")
    expected = torch.tensor([[int(celeba_value(i, s) > 0), int(celeba_value(i, w) > 0)] for i in range(6)])
    assert torch.equal(train.labels, expected)
    assert set(train.labels.flatten().tolist()) == {0, 1}  # -1 became 0
    image, label = train[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 256, 256)  # resized to the original's 256
    assert abs(_red(image) - red_of(4)) <= 3  # the file that belongs to row 4
    assert torch.equal(label, expected[4])
    assert abs(_red(test[0][0]) - red_of(6)) <= 3
    x = to_unit_range(torch.stack([image]))
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1


def test_celebahq_size_limit_and_default_concepts(tmp_path):
    make_celebahq(tmp_path)
    ds = open_dataset("celebahq", root=tmp_path / "CelebAMask-HQ", split="train", limit=4, size=48)
    assert len(ds) == 4 and ds[0][0].shape == (3, 48, 48)
    assert ds.concepts == list(dataset_info("celebahq").default_concepts)
    assert "Young" in dataset_concepts("celebahq", tmp_path)


def test_celebahq_split_files_from_the_store(tmp_path, monkeypatch):
    make_celebahq(tmp_path / "data", write_splits=False)
    with pytest.raises(ArtifactMissingError, match="gencbm download celebahq-splits"):
        open_dataset("celebahq", root=tmp_path / "data", concepts=["Smiling"])
    stored = make_celebahq(tmp_path / "store")  # stands in for the stored artifact's folder
    import engine.store.artifacts as artifacts

    monkeypatch.setattr(artifacts, "resolve_artifact", lambda name: stored.parent if name == "celebahq-splits" else None)
    ds = open_dataset("celebahq", root=tmp_path / "data", concepts=["Smiling"])
    assert len(ds) == 6


def test_celebahq_missing_image_is_one_line_error_naming_the_file(tmp_path):
    base = make_celebahq(tmp_path)
    (base / "CelebA-HQ-img" / "3.jpg").unlink()
    ds = open_dataset("celebahq", root=tmp_path, concepts=["Smiling"])
    with pytest.raises(ImageReadError) as err:
        ds.prepare()
    assert "3.jpg" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 1
    with pytest.raises(ImageReadError, match="3.jpg"):
        ds[3]


def test_unreadable_image_and_worker_reraise(tmp_path):
    base = make_celebahq(tmp_path)
    (base / "CelebA-HQ-img" / "2.jpg").write_bytes(b"not a jpeg at all")
    ds = open_dataset("celebahq", root=tmp_path, concepts=["Smiling"])
    with pytest.raises(ImageReadError, match=r"cannot read image .*2\.jpg"):
        ds[2]
    # A DataLoader worker re-raises with the whole traceback in the message: one line survives.
    wrapped = ImageReadError("Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                             '  File "x.py", line 1, in f\nengine.data.base.ImageReadError: cannot read image /d/2.jpg: bad\n')
    assert str(wrapped) == "cannot read image /d/2.jpg: bad"


def test_celebahq_malformed_split_file(tmp_path):
    base = make_celebahq(tmp_path)
    lines = (base / "train.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # one value short
    (base / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptFileError, match="line 3"):
        open_dataset("celebahq", root=tmp_path, concepts=["Smiling"])


def test_real_dataset_needs_a_root(tmp_path):
    with pytest.raises(UsageError, match="--data-root"):
        open_dataset("celebahq", concepts=["Smiling"])
    with pytest.raises(UsageError, match="not a folder"):
        open_dataset("cub", root=tmp_path / "nowhere")
    with pytest.raises(GencbmError, match="CelebA-HQ-img"):
        open_dataset("celebahq", root=tmp_path)


def test_unknown_concept_lists_valid_and_closest(tmp_path):
    make_celebahq(tmp_path)
    with pytest.raises(UsageError) as err:
        open_dataset("celebahq", root=tmp_path, concepts=["Smilng"])
    assert "'Smiling'" in str(err.value) and "Wearing_Lipstick" in str(err.value)


# ------------------------------------------------------------------------------------------------
# CelebA (64 px)


def test_celeba64_partitions_labels_and_centre_crop(tmp_path):
    make_celeba(tmp_path)
    train = open_dataset("celeba64", root=tmp_path, split="train", concepts=["Male", "wavy hair"])
    val = open_dataset("celeba64", root=tmp_path, split="val", concepts=["Male"])
    test = open_dataset("celeba64", root=tmp_path, split="test", concepts=["Male"])
    assert [len(train), len(val), len(test)] == [4, 2, 1]
    m, w = CELEBA_ATTRS.index("Male"), CELEBA_ATTRS.index("Wavy_Hair")
    expected = torch.tensor([[int(celeba_value(i, m) > 0), int(celeba_value(i, w) > 0)] for i in (1, 2, 3, 4)])
    assert torch.equal(train.labels, expected)
    assert torch.equal(val.labels[:, 0], torch.tensor([int(celeba_value(i, m) > 0) for i in (5, 6)]))
    image, _ = val[1]
    assert image.shape == (3, 64, 64)  # 30 x 40 -> shorter side 64 (64 x 85) -> centre crop 64 x 64
    assert abs(_red(image) - red_of(6)) <= 3
    assert dataset_info("celeba64").eval_split == "val"  # the original's test set was the val partition


def test_celeba64_count_mismatch_is_corrupt(tmp_path):
    make_celeba(tmp_path)
    p = tmp_path / "list_attr_celeba.txt"
    lines = p.read_text().splitlines()
    lines[0] = "99"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptFileError, match="99"):
        open_dataset("celeba64", root=tmp_path, concepts=["Male"])


def test_celeba64_anno_eval_subfolders(tmp_path):
    make_celeba(tmp_path)
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Eval").mkdir()
    (tmp_path / "list_attr_celeba.txt").rename(tmp_path / "Anno" / "list_attr_celeba.txt")
    (tmp_path / "list_eval_partition.txt").rename(tmp_path / "Eval" / "list_eval_partition.txt")
    assert len(open_dataset("celeba64", root=tmp_path, split="train", concepts=["Smiling"])) == 4


# ------------------------------------------------------------------------------------------------
# CUB-200-2011


def test_cub_by_id_by_cub_name_and_by_the_originals_name(tmp_path):
    make_cub(tmp_path, skip_rows=frozenset({(2, 219)}))
    ds = open_dataset("cub", root=tmp_path, split="train", concepts=["219", "has_bill_color::black", "white underparts color"])
    assert ds.concepts == ["Small size 5 to 9 inches", "Black bill color", "White underparts color"]
    train_ids = [i for i in range(1, 9) if i % 4 != 0]
    assert len(ds) == len(train_ids)
    expected = torch.tensor([[0 if (i, a) == (2, 219) else cub_present(i, a) for a in (219, 290, 52)] for i in train_ids])
    assert torch.equal(ds.labels, expected)
    image, _ = ds[1]
    assert image.shape == (3, 256, 256) and abs(_red(image) - red_of(train_ids[1])) <= 3
    test = open_dataset("cub64", root=tmp_path, split="test", concepts=["Small_size_5_to_9_inches"])
    assert len(test) == 2 and test[0][0].shape == (3, 64, 64)
    other = open_dataset("cub", root=tmp_path / "CUB_200_2011", concepts=["has_part_100::value_100"])
    assert other.concepts == ["has_part_100::value_100"]


def test_cub_names_inside_and_missing(tmp_path):
    make_cub(tmp_path / "a", names_at="inside")
    assert open_dataset("cub", root=tmp_path / "a", concepts=["Black bill color"]).concepts == ["Black bill color"]
    make_cub(tmp_path / "b", names_at="none")
    ds = open_dataset("cub", root=tmp_path / "b", concepts=["7", "Black wing color"])  # ids and the original's ten still work
    assert ds.concepts == ["All purpose bill shape", "Black wing color"]
    with pytest.raises(UsageError, match="no attribute id 400"):
        open_dataset("cub", root=tmp_path / "b", concepts=["400"])


def test_cub_default_concepts_are_the_originals_ten(tmp_path):
    make_cub(tmp_path)
    ds = open_dataset("cub64", root=tmp_path, split="train")
    assert len(ds.concepts) == 10 and ds.concepts[0] == "Small size 5 to 9 inches"


def test_cub_short_row_is_corrupt(tmp_path):
    base = make_cub(tmp_path)
    p = base / "attributes" / "image_attribute_labels.txt"
    p.write_text(p.read_text() + "9 219\n")
    with pytest.raises(CorruptFileError, match="image_attribute_labels.txt, line"):
        open_dataset("cub", root=tmp_path, concepts=["219"])


def test_cub_missing_image(tmp_path):
    base = make_cub(tmp_path)
    victim = next((base / "images").rglob("*_0003_*.jpg"))
    victim.unlink()
    ds = open_dataset("cub", root=tmp_path, concepts=["219"])
    with pytest.raises(ImageReadError, match=victim.name):
        ds.prepare()


# ------------------------------------------------------------------------------------------------
# toyfaces


def test_toyfaces_splits_labels_and_cache():
    from engine.data.toyfaces import TEST_OFFSET, render_split
    from engine.toyfaces import World, render, z_for_indices

    train = open_dataset("toyfaces", split="train", concepts=["smiling", "Male"], limit=12)
    test = open_dataset("toyfaces", split="test", concepts=["Smiling"], limit=5)
    assert len(train) == 12 and len(test) == 5 and train.concepts == ["Smiling", "Male"]
    world = World()
    c, n = world.factors(z_for_indices(range(12), world.z_dim))
    assert torch.equal(train.labels, c[:, [0, 2]])
    expected = ((render(c, n, 32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    image, label = train[3]
    assert image.shape == (3, 32, 32) and torch.equal(image, expected[3]) and torch.equal(label, c[3, [0, 2]])
    ct, _ = world.factors(z_for_indices([TEST_OFFSET + i for i in range(5)], world.z_dim))
    assert torch.equal(test.labels[:, 0], ct[:, 0])
    images, _ = render_split("train", 12)
    assert images.data_ptr() == render_split("train", 8)[0].data_ptr()  # served from the cache
    assert dataset_info("toyfaces").default_concepts[0] == "Smiling"
    with pytest.raises(UsageError):
        open_dataset("toyfaces", split="val")

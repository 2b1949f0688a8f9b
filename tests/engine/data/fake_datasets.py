"""Tiny datasets written in the real on-disk formats (CelebAMask-HQ splits, CelebA, CUB-200-2011).

Each image is a flat colour whose red channel encodes the sample (`red_of(i)`), so a test can check
that a loader pairs each file with the right labels. Labels follow fixed formulas of the image
number, so tests know the truth without reading the files back.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
assert len(CELEBA_ATTRS) == 40


def red_of(i: int) -> int:
    return (37 * i + 11) % 256


def celeba_value(i: int, attr: int) -> int:
    """-1 / 1 value of attribute `attr` (0-based) of image i."""
    return 1 if (i * 7 + attr * 3) % 5 < 2 else -1


def _jpeg(path: Path, i: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (red_of(i), 90, 160)).save(path, quality=95)


def make_celebahq(root: Path, train: range = range(0, 6), test: range = range(6, 9), image_size: int = 40,
                  write_splits: bool = True) -> Path:
    """root/CelebAMask-HQ/{CelebA-HQ-img/N.jpg, train.txt, test.txt} in the original's split format."""
    base = root / "CelebAMask-HQ"
    for i in [*train, *test]:
        _jpeg(base / "CelebA-HQ-img" / f"{i}.jpg", i, (image_size, image_size))
    if write_splits:
        for name, ids in (("train", train), ("test", test)):
            lines = [" ".join(CELEBA_ATTRS)]
            for i in ids:  # two spaces after the file name, as the published files
                lines.append(f"{i}.jpg  " + " ".join(str(celeba_value(i, a)) for a in range(40)))
            (base / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return base


def celeba_name(i: int) -> str:
    return f"{i:06d}.jpg"


def make_celeba(root: Path, partition: dict[int, int] | None = None, size: tuple[int, int] = (30, 40)) -> Path:
    """root/{img_align_celeba/000001.jpg, list_attr_celeba.txt, list_eval_partition.txt}, ids 1..N."""
    partition = partition or {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 2}
    for i in partition:
        _jpeg(root / "img_align_celeba" / celeba_name(i), i, size)
    lines = [str(len(partition)), " ".join(CELEBA_ATTRS) + " "]
    for i in partition:  # CelebA aligns the columns: "-1" after one space, " 1" after two
        values = "".join(f" {celeba_value(i, a):2d}" for a in range(40))
        lines.append(celeba_name(i) + values)
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{celeba_name(i)} {p}\n" for i, p in partition.items()))
    return root


CUB_USED = {219: "has_size::small_(5_-_9_in)", 290: "has_bill_color::black", 52: "has_underparts_color::white",
            7: "has_bill_shape::all-purpose"}


def cub_present(image_id: int, attribute_id: int) -> int:
    return 1 if (image_id + attribute_id) % 3 == 0 else 0


def make_cub(root: Path, n_images: int = 8, is_train=lambda i: i % 4 != 0, names_at: str = "top",
             skip_rows: frozenset = frozenset()) -> Path:
    """root/CUB_200_2011/{images/..., images.txt, train_test_split.txt, attributes/image_attribute_labels.txt}
    and the attribute names beside CUB_200_2011 (names_at="top"), inside it ("inside") or nowhere ("none").
    Rows (image_id, attribute_id) in skip_rows are left out (absent attribute)."""
    base = root / "CUB_200_2011"
    images, split, rows = [], [], []
    for i in range(1, n_images + 1):
        rel = f"{(i % 2) + 1:03d}.Bird_{i % 2}/Bird_{i % 2}_{i:04d}_{1000 + i}.jpg"
        _jpeg(base / "images" / rel, i, (50, 36))
        images.append(f"{i} {rel}")
        split.append(f"{i} {1 if is_train(i) else 0}")
        for a in range(1, 313):
            if (i, a) in skip_rows:
                continue
            extra = " 0" if (i * a) % 97 == 0 else ""  # some real rows carry an extra field
            rows.append(f"{i} {a} {cub_present(i, a)} 3 2.5{extra}")
    base.mkdir(parents=True, exist_ok=True)
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "attributes").mkdir(exist_ok=True)
    (base / "attributes" / "image_attribute_labels.txt").write_text("\n".join(rows) + "\n")
    names = "".join(f"{a} {CUB_USED.get(a, f'has_part_{a}::value_{a}')}\n" for a in range(1, 313))
    if names_at == "top":
        (root / "attributes.txt").write_text(names)
    elif names_at == "inside":
        (base / "attributes" / "attributes.txt").write_text(names)
    return base

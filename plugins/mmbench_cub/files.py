"""The Caltech-UCSD Birds files as users have them, and which images form the train and test sets.

    <data-dir>/cub/CUB_200_2011/images/<class>/<image>.jpg     the CUB-200-2011 images
    <data-dir>/cub/text/<class>/<image>.txt                    10 captions per image, one a line
                                                               (Reed et al. 2016; AttnGAN and MMVAE
                                                               ship them as text/ or text_c10/)
    split, the first found of:
      <data-dir>/cub/{train,test}/filenames.pickle             the AttnGAN/MMVAE authors' split
      <data-dir>/cub/{train,test}.txt                          the same names, one a line
      <data-dir>/cub/CUB_200_2011/{images,train_test_split}.txt   CUB's own per-image split

A name is ``<class>/<image>`` without extension, as in the authors' pickles.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

from mmbench.errors import DataError

TEXT_DIRS = ("text", "text_c10")
FETCH_HINT = ("CUB cannot be fetched automatically (the captions live on a shared drive): download "
              "CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ and the captions "
              "(birds.zip of AttnGAN, or text_c10 of Reed et al.) and unpack them there, or pass --data-dir")


@dataclass
class Layout:
    root: Path
    images: Path
    text: Path
    split_source: str
    train: list[str]
    test: list[str]


class _ListsOnly(pickle.Unpickler):
    """Unpickles lists and strings, never code: a split file is data."""

    def find_class(self, module, name):
        raise DataError(f"a split pickle may hold only a list of names; it refers to {module}.{name}")


def _read_pickle(path: Path) -> list[str]:
    try:
        # The authors' pickles come from Python 2: their str objects need latin-1 to load.
        names = _ListsOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable pickle of file names ({type(exc).__name__}: {exc})") from None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path} should hold a list of image names like '001.Black_footed_Albatross/...'")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _strip(name: str) -> str:
    name = name.replace("\\", "/").strip("/")
    for ext in (".jpg", ".jpeg", ".png", ".txt"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _cub_split(images_txt: Path, split_txt: Path) -> tuple[list[str], list[str]]:
    paths = dict(line.split(maxsplit=1) for line in _read_list(images_txt))
    train, test = [], []
    for line in _read_list(split_txt):
        image_id, is_train = line.split()
        (train if is_train == "1" else test).append(_strip(paths[image_id]))
    return train, test


def locate(data_dir: Path, dataset: str) -> Layout:
    """Where the images, captions and split are, or one DataError saying what is missing."""
    root = Path(data_dir) / "cub"
    images = root / "CUB_200_2011" / "images"
    text = next((root / t for t in TEXT_DIRS if (root / t).is_dir()), root / TEXT_DIRS[0])
    missing = [str(p) for p in (images, text) if not p.is_dir()]
    if missing:
        raise DataError(f"dataset '{dataset}' is missing {', '.join(missing)} (looked under {root.resolve()}); {FETCH_HINT}")
    if (root / "train" / "filenames.pickle").is_file() and (root / "test" / "filenames.pickle").is_file():
        source = "train/filenames.pickle, test/filenames.pickle"
        train, test = (_read_pickle(root / s / "filenames.pickle") for s in ("train", "test"))
    elif (root / "train.txt").is_file() and (root / "test.txt").is_file():
        source = "train.txt, test.txt"
        train, test = _read_list(root / "train.txt"), _read_list(root / "test.txt")
    elif (root / "CUB_200_2011" / "train_test_split.txt").is_file():
        source = "CUB_200_2011/train_test_split.txt"
        train, test = _cub_split(root / "CUB_200_2011" / "images.txt", root / "CUB_200_2011" / "train_test_split.txt")
    else:
        raise DataError(f"dataset '{dataset}' found no split under {root.resolve()}: expected train/filenames.pickle "
                        "and test/filenames.pickle, train.txt and test.txt, or CUB_200_2011/train_test_split.txt")
    train, test = [_strip(n) for n in train], [_strip(n) for n in test]
    if not train or not test:
        raise DataError(f"the CUB split in {root / source.split(',')[0]} leaves the train or the test set empty")
    overlap = set(train) & set(test)
    if overlap:
        raise DataError(f"the CUB split ({source}) puts {len(overlap)} images in both sets, e.g. {sorted(overlap)[0]}")
    return Layout(root, images, text, source, train, test)


def image_path(layout: Layout, name: str) -> Path:
    path = layout.images / f"{name}.jpg"
    if not path.is_file():
        raise DataError(f"CUB image {path} (named by the split {layout.split_source}) is missing")
    return path


def read_captions(layout: Layout, name: str, per_image: int) -> list[str]:
    """The first ``per_image`` captions of an image; fewer is an error naming the file."""
    path = layout.text / f"{name}.txt"
    if not path.is_file():
        raise DataError(f"the captions of CUB image {name} are missing: expected {path}")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(lines) < per_image:
        raise DataError(f"{path} holds {len(lines)} captions; CUB has {per_image} per image (truncated file?)")
    return lines[:per_image]


def class_of(name: str) -> str:
    return name.split("/", 1)[0]

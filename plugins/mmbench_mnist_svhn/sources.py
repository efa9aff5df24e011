"""MNIST and SVHN as their publishers ship them, in torchvision's folder layout:

    <data-dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   (IDX files)
    <data-dir>/SVHN/{train,test}_32x32.mat                                      (MATLAB v5)

Readers check what they read: a gzip archive is checked against the MD5 that torchvision lists
for it (and by gzip's own CRC), an IDX file by its header against its length, a .mat file by
its MD5 and the keys and shapes it must hold. Anything wrong is a DataError naming the file.
Fetching (``--download``) goes through torchvision, into the same layout.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mmbench.datasets import check_md5, require_files
from mmbench.errors import DataError

#: torchvision.datasets.MNIST.resources: the published archives and their MD5 checksums
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: torchvision.datasets.SVHN.split_list: the published .mat files and their MD5 checksums
SVHN_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
MNIST_DIR = Path("MNIST") / "raw"
SVHN_DIR = Path("SVHN")
MNIST_PREFIX = {"train": "train", "test": "t10k"}
IDX_UINT8 = 0x08
FETCH_HINT = ("run again with --download to fetch them (about 200 MB), or pass --data-dir pointing at a folder "
              "that holds MNIST/raw/ and SVHN/ as torchvision lays them out")


# ----------------------------------------------------------------------------- MNIST
def _mnist_file(root: Path, split: str, kind: str) -> Path:
    """The IDX file of (split, kind), gzipped (as published) or as torchvision unpacks it."""
    suffix = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}[kind]
    plain = Path(root) / MNIST_DIR / f"{MNIST_PREFIX[split]}-{suffix}"
    packed = plain.with_name(plain.name + ".gz")
    return packed if packed.is_file() or not plain.is_file() else plain


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """An IDX array (http://yann.lecun.com/exdb/mnist/, the format's definition): magic
    0x0000 <type> <ndim>, ndim big-endian int32 sizes, then the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    kind, ndim = raw[2], raw[3]
    if kind != IDX_UINT8:
        raise DataError(f"{path} holds IDX type {kind:#04x}; MNIST files hold unsigned bytes (0x08)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (its header is incomplete)")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or corrupt: its header promises {dims} ({expected} bytes), "
                        f"the file holds {len(raw)} bytes; delete it and fetch it again (--download)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".gz":
        expected = MNIST_MD5.get(path.name)
        if expected:
            check_md5(path, expected)
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is corrupt or truncated ({exc}); delete it and fetch it again (--download)") from None
    else:
        raw = path.read_bytes()
    return parse_idx(raw, path)


def read_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 1, 28, 28] uint8, labels [N] int64) of split 'train' or 'test'."""
    images = read_idx(_mnist_file(root, split, "images"))
    labels = read_idx(_mnist_file(root, split, "labels"))
    path = _mnist_file(root, split, "images")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{path} holds images of shape {images.shape[1:]}; MNIST's are 28×28")
    if labels.shape != (len(images),):
        raise DataError(f"{_mnist_file(root, split, 'labels')} holds {labels.shape} labels for {len(images)} images in {path}")
    if labels.max(initial=0) > 9:
        raise DataError(f"{_mnist_file(root, split, 'labels')} holds labels above 9")
    return images[:, None].copy(), labels.astype(np.int64)


# ----------------------------------------------------------------------------- SVHN
def read_svhn(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 3, 32, 32] uint8, labels [N] int64) from SVHN's cropped-digit .mat files,
    which hold X [32, 32, 3, N] and y [N, 1] with 10 standing for the digit 0."""
    from scipy.io import loadmat

    path = Path(root) / SVHN_DIR / f"{split}_32x32.mat"
    expected = SVHN_MD5.get(path.name)
    if expected:
        check_md5(path, expected)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises several kinds on a damaged file
        raise DataError(f"{path} is corrupt or not a MATLAB file ({type(exc).__name__}: {exc})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the arrays X and y of SVHN's .mat files")
    x, y = mat["X"], mat["y"].reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path} holds X of shape {x.shape} and {len(y)} labels; SVHN's X is [32, 32, 3, N]")
    if x.dtype != np.uint8 or y.min(initial=1) < 1 or y.max(initial=1) > 10:
        raise DataError(f"{path} holds {x.dtype} pixels or labels outside 1..10; SVHN's are uint8 and 1..10")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), (y % 10).astype(np.int64)


# ----------------------------------------------------------------------------- presence and fetching
def expected_files(root: Path) -> list[Path]:
    """What must be present under ``root`` (an MNIST file may be gzipped or unpacked)."""
    mnist = [_mnist_file(root, s, k).relative_to(root) for s in MNIST_PREFIX for k in ("images", "labels")]
    return mnist + [SVHN_DIR / name for name in SVHN_MD5]


def require(root: Path, dataset: str) -> None:
    require_files(dataset, root, expected_files(root), FETCH_HINT)


def download(root: Path) -> None:
    """Fetch what is absent through torchvision (which checks the MD5s as it downloads)."""
    try:
        from torchvision.datasets import MNIST, SVHN
    except ImportError:
        raise DataError("--download needs torchvision: pip install 'mmbench[vision]'") from None
    root = Path(root)
    try:
        if any(not (root / f).is_file() for f in expected_files(root)[:4]):
            MNIST(root, download=True)  # fetches both splits' four archives
        for split in ("train", "test"):
            if not (root / SVHN_DIR / f"{split}_32x32.mat").is_file():
                SVHN(root / SVHN_DIR, split=split, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"downloading MNIST/SVHN into {root.resolve()} failed ({type(exc).__name__}: {exc}); "
                        "check the connection, or place the files there yourself") from None

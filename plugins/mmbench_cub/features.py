"""CUB images as 2048-d ResNet-101 features (MMVAE §4.3: the image modality is the pooled
output of an ImageNet-trained ResNet-101), computed once in batches — on the GPU when there is
one — and cached beside the data."""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

import torch

from mmbench.datasets import atomic_torch_save
from mmbench.errors import DataError

FEATURES = 2048
WEIGHTS = ("imagenet", "none")  # "none": untrained weights, for tests and for offline checks
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VERSION = 1


def cache_path(root: Path, names: list[str], weights: str, image_size: int) -> Path:
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return Path(root) / "features" / f"resnet101-v{VERSION}-{weights}-{image_size}px-{digest}.pt"


@functools.lru_cache(maxsize=1)
def _network(weights: str) -> torch.nn.Module:
    try:
        from torchvision.models import ResNet101_Weights, resnet101
    except ImportError:
        raise DataError("CUB image features need torchvision: pip install 'mmbench[vision]'") from None
    try:
        # IMAGENET1K_V1: the original torchvision ResNet-101 weights, those of the paper's time.
        net = resnet101(weights=ResNet101_Weights.IMAGENET1K_V1 if weights == "imagenet" else None)
    except Exception as exc:  # no connection and nothing in the torch hub cache
        raise DataError(f"cannot obtain the ImageNet ResNet-101 weights ({type(exc).__name__}: {exc}); they download "
                        "once into $TORCH_HOME (~/.cache/torch) — run where the internet is reachable, or pass "
                        "--data-option weights=none for untrained features") from None
    net.fc = torch.nn.Identity()  # the 2048-d average-pooled features
    return net.eval()


def _transform(image_size: int):
    from torchvision import transforms

    # ImageNet's evaluation preprocessing (resize to 256/224 of the crop, centre crop, normalise)
    return transforms.Compose([
        transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _read(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"CUB image {path} is corrupt or truncated ({exc})") from None


@torch.no_grad()
def extract(paths: list[Path], weights: str, image_size: int, batch_size: int = 64,
            device: torch.device | None = None) -> torch.Tensor:
    """[N, 2048] float32 features of the images at ``paths``, in order."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, transform = _network(weights).to(device), _transform(image_size)
    out = []
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([transform(_read(p)) for p in paths[i:i + batch_size]]).to(device)
        out.append(net(batch).float().cpu())
        if len(paths) > batch_size:
            print(f"\r  ResNet-101 features: {min(i + batch_size, len(paths))}/{len(paths)} images",
                  end="", file=sys.stderr)
    if len(paths) > batch_size:
        print(file=sys.stderr)
    return torch.cat(out) if out else torch.zeros(0, FEATURES)


def cached_features(root: Path, names: list[str], paths: list[Path], weights: str, image_size: int) -> torch.Tensor:
    """The features of ``names`` from the cache, computed (and cached atomically) when absent."""
    path = cache_path(root, names, weights, image_size)
    if path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            if saved["names"] == names and saved["features"].shape == (len(names), FEATURES):
                return saved["features"]
        except Exception:
            pass  # an unreadable cache is recomputed, never used
    features = extract(paths, weights, image_size)
    atomic_torch_save({"names": names, "features": features, "weights": weights, "image_size": image_size}, path)
    return features

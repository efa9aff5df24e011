"""The best grey→colour generation a model can show when it knows the digit but not its colours.

Under a pixel-wise Laplace likelihood the decoder's best output for an unknown colouring is the
per-pixel median over the colourings it might be (for an even count torch's median is the lower
middle value, which minimises the summed absolute error as well). This script draws each test source digit of
``digits`` in every (foreground, background) pair of the dataset — centred, 24 px, no noise —
takes the per-pixel median, and reads it with the colour judges the runs use. Beside it the
same with both polarities (each pair also the other way round), as digits version 2 drew them:
then a stroke pixel's median and a background pixel's are the same colour, and the digit fades.

    python benchmarks/colourless_median.py [--data-dir DIR] [--cache-dir DIR]

(defaults: $MMBENCH_HOME/data and $MMBENCH_HOME/cache, as `mmbench run` uses them: the judges
are the run's, trained once if not there yet.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

import mmbench_digits as digits
from mmbench.judges import get_judge, predict
from mmbench.plugins import get_plugins


def colourless_medians(images8: np.ndarray, pairs) -> torch.Tensor:
    """[N, 3, 32, 32] uint8: for each 8×8 digit, the per-pixel median over its colourings."""
    size = 24
    top = (32 - size) // 2
    medians = torch.stack([torch.stack([digits.draw_colour(d, fg, bg, size, top, top) for fg, bg in pairs])
                           .median(0).values for d in images8])
    return (medians * 255).round().to(torch.uint8)


def main() -> None:
    home = Path(os.environ.get("MMBENCH_HOME", Path.home() / ".cache" / "mmbench"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=home / "data")
    parser.add_argument("--cache-dir", type=Path, default=home / "cache")
    args = parser.parse_args()

    from sklearn.datasets import load_digits

    dataset = get_plugins().datasets.get("digits").configure()
    data = dataset.load(args.data_dir)
    colour = [m.name for m in dataset.modalities_for(data)].index("colour")
    judges = {kind: get_judge(dataset, data, colour, args.cache_dir, kind=kind) for kind in ("cnn", "ridge")}
    bunch = load_digits()
    test_ids = np.asarray(data.info["source_ids"]["test"])
    images8, labels = bunch.images[test_ids], torch.as_tensor(bunch.target[test_ids])
    pairs = digits.colour_pairs()
    both = sorted(set(pairs) | {(bg, fg) for fg, bg in pairs})
    print(f"digits version {data.info['version']}: {len(test_ids)} test source digits; "
          f"colour judges' test accuracy " + ", ".join(f"{k} {j.test_acc:.3f}" for k, j in judges.items()))
    for name, chosen in ((f"this version's {len(pairs)} pairs", pairs), (f"both polarities, {len(both)} pairs", both)):
        x = colourless_medians(images8, chosen)
        read = {kind: (predict(j.net, x).cpu() == labels).float().mean().item() for kind, j in judges.items()}
        print(f"  median over {name}: judged " + ", ".join(f"{k} {v:.3f}" for k, v in read.items()))


if __name__ == "__main__":
    main()

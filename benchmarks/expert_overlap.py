"""How much the unimodal experts of trained runs overlap: the median over test items of
log q_i(z_j | x_i) − log q_j(z_j | x_j) for one z_j ~ q_j(z | x_j), for every pair (i, j).

This is the log of the importance weight that is-elbo's cross terms (MMVAE Appendix B) put on
decoder j's reconstruction when it trains expert i. Around −100 nats, those weights are
e^−100: the cross terms carry no gradient and the objective falls apart into M unimodal VAEs.

    python benchmarks/expert_overlap.py results/digits/runs/digits/*/seed-0 [--items 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mmbench.plugins import get_plugins
from mmbench.reevaluate import load_trained


def log_ratios(model, xs) -> torch.Tensor:
    """[I, J] medians over items of log q_i(z_j|x_i) − log q_j(z_j|x_j), one z_j per item."""
    experts = model.encode(xs)
    family = model.family
    samples = [family.rsample(e.loc, e.scale, 1)[0] for e in experts]
    M = len(experts)
    out = torch.empty(M, M)
    for i in range(M):
        for j in range(M):
            own = family.log_prob(samples[j], experts[j].loc, experts[j].scale)
            other = family.log_prob(samples[j], experts[i].loc, experts[i].scale)
            out[i, j] = (other - own).median()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories with a checkpoint.pt")
    parser.add_argument("--items", type=int, default=256, help="test items (default 256)")
    parser.add_argument("--data-dir", default=str(Path.home() / ".cache" / "mmbench" / "data"))
    args = parser.parse_args()
    plugins = get_plugins()
    torch.manual_seed(0)
    for run in args.runs:
        info, dataset, data, posterior, model = load_trained(Path(run), plugins, torch.device("cpu"), Path(args.data_dir))
        names = model.names
        with torch.no_grad():
            ratios = log_ratios(model, data.test.batch(torch.arange(args.items), names))
        print(f"{run}: median log q_i(z_j|x_i) - log q_j(z_j|x_j) (row i, column j)")
        width = max(len(n) for n in names)
        print(" " * (width + 2) + "".join(f"{n:>10}" for n in names))
        for i, name in enumerate(names):
            print(f"  {name:<{width}}" + "".join(f"{ratios[i, j].item():10.1f}" for j in range(len(names))))


if __name__ == "__main__":
    main()

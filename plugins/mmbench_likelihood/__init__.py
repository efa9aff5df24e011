"""Log-likelihoods and synergy (MMVAE §4, Table 3) as a metric.

For every modality m, and every pair {m, n} of modalities (in the dataset's order), each an
IWAE estimate of 1,000 samples (option ``loglik.samples``) averaged over a fixed subset of the
test pairs (``loglik.items``, default 100, the same subset for every run), unweighted (λ = 1), in
nats. The notation reads ``loglik[<target>|<observed>]``: log p(x_target) estimated with the
joint posterior given the observed modalities as the proposal.

- ``loglik[m,n]``      log p(x_m, x_n), proposal q(z | x_m, x_n) (for MoE: Eq. 5's estimator)
- ``loglik[m|m,n]``    log p(x_m), proposal q(z | x_m, x_n)
- ``loglik[m|m]``      log p(x_m), proposal q(z | x_m)
- ``loglik[m|n]``      log p(x_m), proposal q(z | x_n)
- ``synergy[m|m,n]``   loglik[m|m,n] − loglik[m|m]: what observing x_n as well adds to the
  explanation of x_m. Synergy holds where it is ≥ 0. With more than two modalities it is
  reported per pair, because Table 3 is a table of pairs and each pair's proposal is one the
  model can be asked for; the full set's posterior is one more proposal, not reported here.

Each row carries ``details`` (items, samples, samples per expert, estimator, and ``se``: the
standard error of the mean over the items — of the per-item difference, for synergy) in
metrics.jsonl.

References: Shi, Siddharth, Paige, Torr. Variational Mixture-of-Experts Autoencoders for
Multi-Modal Deep Generative Models. NeurIPS 2019 (§4, Table 3). Burda et al., ICLR 2016 (IWAE).
"""

from __future__ import annotations

import math
from itertools import combinations

import torch

from mmbench import hookimpl
from mmbench.api import Metric, MetricValue, Option

from .estimate import SampleBank, items_per_batch, log_marginals, proposal_components, samples_per_component

DEFAULT_SAMPLES = 1000
DEFAULT_ITEMS = 100


def proposal_sets(num_modalities: int) -> list[tuple[tuple[int, ...], list[tuple[int, ...]]]]:
    """(observed set, target sets) for Table 3: each modality alone explaining every modality,
    then each pair explaining itself jointly and each of its members."""
    plan = [((m,), [(d,) for d in range(num_modalities)]) for m in range(num_modalities)]
    plan += [((m, n), [(m, n), (m,), (n,)]) for m, n in combinations(range(num_modalities), 2)]
    return plan


def metric_name(names: list[str], target: tuple[int, ...], observed: tuple[int, ...]) -> str:
    if target == observed and len(target) > 1:
        return f"loglik[{','.join(names[d] for d in target)}]"
    (m,) = target
    rest = [names[o] for o in observed if o != m]
    given = [names[m], *rest] if m in observed else rest
    return f"loglik[{names[m]}|{','.join(given)}]"


class LogLikelihood(Metric):
    name = "loglik"
    criterion = "synergy"
    higher_is_better = True
    unit = "nats"
    description = ("IWAE log-likelihoods loglik[m,n], loglik[m|m,n], loglik[m|m], loglik[m|n] "
                   "and synergy[m|m,n] = loglik[m|m,n] - loglik[m|m] (Table 3; λ = 1)")
    # the aliases: their names (flags, grid keys, run.json keys) when the core held them
    options = (
        Option("samples", DEFAULT_SAMPLES, "importance samples per estimate (1000, as MMVAE Table 3)", low=1,
               aliases=("loglik_samples",)),
        Option("items", DEFAULT_ITEMS, "fixed test pairs the estimates average over (each value's standard error over them is in its details)",
               low=1, aliases=("loglik_items",)),
    )

    def settings(self, ctx) -> tuple[int, int]:
        """(samples, items) of the estimates: the options, the items no more than the test split has."""
        return self.option_values["samples"], min(self.option_values["items"], len(ctx.data.test))

    def evaluate(self, ctx):
        samples, items = self.settings(ctx)
        rows = ctx.test_rows(items)
        xs = ctx.data.test.batch(rows, ctx.names)
        values = self.estimates(ctx, xs, samples)
        names = ctx.names
        for (target, observed), (per_item, details) in values.items():
            yield MetricValue(metric_name(names, target, observed), per_item.mean().item(),
                              {**details, "items": len(rows), "se": standard_error(per_item)})
        for m, n in combinations(range(len(names)), 2):
            for a, b in ((m, n), (n, m)):
                (joint, details), (single, _) = values[((a,), (m, n))], values[((a,), (a,))]
                # the difference of the two values shown (a mean of differences differs in float32)
                yield MetricValue(f"synergy[{names[a]}|{names[a]},{names[b]}]",
                                  joint.mean().item() - single.mean().item(),
                                  {**details, "items": len(rows), "se": standard_error(joint - single)})

    @torch.no_grad()
    def estimates(self, ctx, xs, samples: int) -> dict:
        """{(target, observed): (the estimate per item [N], details)}, batched over items; within a
        batch, a proposal's components drawn before for another proposal are reused (SampleBank)."""
        parts: dict = {}
        details: dict = {}
        batch = items_per_batch(samples)
        for start in range(0, len(xs[0]), batch):
            part = [x[start:start + batch] for x in xs]
            bank = SampleBank()
            for observed, targets in proposal_sets(len(part)):
                q = ctx.model.condition([x if m in observed else None for m, x in enumerate(part)], list(observed))
                # Each single expert's draws are decoded by every decoder (its targets are all the
                # modalities), so every pair's mixture finds what it needs in the bank.
                for target, value in log_marginals(ctx.model, q, part, targets, samples, bank=bank).items():
                    parts.setdefault((target, observed), []).append(value)
                    experts_in_q = len(proposal_components(q))
                    details[(target, observed)] = {
                        "samples": samples_per_component(q, samples) * experts_in_q,
                        "samples_per_expert": samples_per_component(q, samples),
                        "estimator": "eq5-stratified" if experts_in_q > 1 else "iwae"}
        return {key: (torch.cat(values), details[key]) for key, values in parts.items()}


def standard_error(per_item) -> float:
    """The standard error of a mean over items (NaN for one item)."""
    n = per_item.numel()
    return per_item.std().item() / math.sqrt(n) if n > 1 else float("nan")


@hookimpl
def register_metrics(register):
    register(LogLikelihood())

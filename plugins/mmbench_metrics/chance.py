"""What a metric scores by guessing: the level its value is read against."""

from __future__ import annotations

from torch import Tensor


def chance(labels: Tensor, guesses: int = 1) -> float:
    """The probability that ``guesses`` independent uniform guesses over the classes present in
    ``labels`` all hit one given label: 1/C for a coherence or an accuracy over C classes,
    C^-(J-1) for J judges agreeing with each other (joint coherence). Metrics keep it in each
    value's details, where the leaderboard's tall table shows it."""
    classes = int(labels.unique().numel())
    return float(classes) ** -guesses

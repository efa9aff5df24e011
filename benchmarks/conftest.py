"""The benchmarks' terminal summary: the speed-ups of benchmarks/test_step.py, side by side."""

import os
from pathlib import Path

import step_summary

_LOAD_BEFORE = step_summary.load_averages()


def pytest_terminal_summary(terminalreporter):
    if not step_summary.MEDIANS:
        return
    text = step_summary.summary(_LOAD_BEFORE)
    terminalreporter.write_sep("=", "training step: speed-up over the naive fp32 loop")
    terminalreporter.write_line(text)
    if os.environ.get("MMBENCH_BENCH_OUT"):
        Path(os.environ["MMBENCH_BENCH_OUT"]).write_text(text + "\n")
        terminalreporter.write_line(f"(also written to {os.environ['MMBENCH_BENCH_OUT']})")

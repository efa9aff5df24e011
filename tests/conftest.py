import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mmbench_home(tmp_path_factory):
    """One data/judge cache for the whole session, so the digits set and judges build once."""
    home = tmp_path_factory.mktemp("mmbench-home")
    return home


@pytest.fixture(scope="session")
def plugins():
    from mmbench.plugins import get_plugins

    return get_plugins()


@pytest.fixture(scope="session")
def digits_data(plugins, mmbench_home):
    return plugins.datasets.get("digits").load(mmbench_home / "data")


@pytest.fixture
def single_thread():
    """Torch on one thread: tiny models gain nothing from a second one, and on a busy machine
    its spin-waiting costs far more than it brings."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_with_grid_plugins(*args) -> tuple[int, str, str]:
    """``mmbench --plugins-dir tests/grid_plugins ARGS`` in this process (tiny-digits and the
    test plugins): (exit status, stdout, stderr)."""
    import contextlib
    import io

    from mmbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--plugins-dir", str(Path(__file__).parent / "grid_plugins"), *args])
    return rc, out.getvalue(), err.getvalue()


def run_cli(*args, env=None, cwd=None, timeout=1800):
    """``mmbench ARGS`` in a real subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mmbench.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)

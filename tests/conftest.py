import os
import subprocess
import sys

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


def run_cli(*args, env=None, cwd=None, timeout=1800):
    """``mmbench ARGS`` in a real subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mmbench.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)

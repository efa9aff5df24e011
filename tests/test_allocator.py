"""glibc's thresholds are raised in-process, and a user's own malloc tuning is left alone."""

import ctypes.util
import os
import sys

import pytest

from mmbench.allocator import keep_freed_memory

glibc = sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None


@pytest.mark.skipif(not glibc, reason="glibc's mallopt exists only on Linux with glibc")
def test_thresholds_are_set_on_glibc(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(key)
    assert keep_freed_memory() is True


def test_the_users_own_tuning_wins(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False

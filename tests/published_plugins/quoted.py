"""A plugin that ships published results the way a dataset plugin would: the TOML files beside
it. Test data for tests/test_published.py (see the file's own header)."""

from pathlib import Path

from mmbench import hookimpl
from mmbench.published import register_folder


@hookimpl
def register_published(register):
    register_folder(register, Path(__file__).with_name("published"))

"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class MMBenchError(Exception):
    """A problem with the user's input or environment, explained in words (no traceback)."""


class PluginError(MMBenchError):
    """A plugin failed to load, registered something malformed, or clashed with another."""


class DataError(MMBenchError):
    """A dataset is missing, corrupt, or cannot be obtained."""


class Unsupported(MMBenchError):
    """A model cannot give what a metric asks of it (e.g. an exact density); the metric is
    skipped with this reason instead of reporting a wrong number."""

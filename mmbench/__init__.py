"""mmbench: a benchmark suite for multimodal deep generative models.

A plugin needs only ``from mmbench import hookimpl``; the base classes it subclasses live in
:mod:`mmbench.api`.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mmbench")

__all__ = ["hookimpl", "__version__"]

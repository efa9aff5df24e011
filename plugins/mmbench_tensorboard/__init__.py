"""``tensorboard``: a tracker writing each run's TensorBoard event files into
``<run_dir>/tensorboard/`` through ``torch.utils.tensorboard.SummaryWriter`` (needs ``pip
install tensorboard``; ``tensorboard --logdir <out>`` then shows every run of a results
directory, each under its directory's name).

What it logs, step = epoch: ``train/bound`` (run.json's per-epoch training bound), ``train/
seconds``, ``train/step_ms``, ``train/decoder_passes``; once evaluated, ``metrics/<name>`` for
each metric value (at the last epoch); each artifact PNG as an image ``artifacts/<path>``, other
files as text naming them; the run's spec and resolved settings as text ``run``, its end as
text ``status``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from mmbench import hookimpl
from mmbench.api import Tracker

FOLDER = "tensorboard"


class TensorBoard(Tracker):
    name = "tensorboard"
    description = "TensorBoard event files in <run_dir>/tensorboard/ (torch.utils.tensorboard)"

    def unavailable(self):
        if importlib.util.find_spec("tensorboard") is None:
            return "the tensorboard package is not installed: pip install tensorboard"
        return None

    def start(self, run_info):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_info["run_dir"])
        self.writer = SummaryWriter(log_dir=str(self.run_dir / FOLDER))
        self.last_epoch = 0
        settings = {key: run_info.get(key) for key in ("spec", "resolved_hparams", "options")}
        self.writer.add_text("run", f"{run_info['name']}\n\n```\n{json.dumps(settings, indent=1, sort_keys=True)}\n```")

    def log_epoch(self, epoch, values):
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", value, epoch)
        self.last_epoch = epoch
        self.writer.flush()

    def log_metrics(self, rows):
        for row in rows:
            self.writer.add_scalar(f"metrics/{row['metric']}", float(row["value"]), self.last_epoch)
        self.writer.flush()

    def log_artifact(self, path):
        path = Path(path)
        tag = f"artifacts/{path.relative_to(self.run_dir).as_posix() if path.is_relative_to(self.run_dir) else path.name}"
        if path.suffix.lower() == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(tag, pixels, self.last_epoch, dataformats="HWC")
        else:
            self.writer.add_text(tag, f"file: {path}", self.last_epoch)

    def finish(self, status):
        self.writer.add_text("status", status, self.last_epoch)
        self.writer.close()


@hookimpl
def register_trackers(register):
    register(TensorBoard())

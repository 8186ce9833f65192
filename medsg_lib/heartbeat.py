"""A line of progress every few seconds on stdout, for long work run headless (``reproduce`` streams it).

Inside a notebook run by ``python -m medsg_lib reproduce``, tqdm draws widgets that papermill cannot show; so
the reproduce command sets ``MEDSG_HEARTBEAT_S`` and forwards the notebooks' stdout lines that start with
:data:`PREFIX`. Off (no output) when the variable is unset or 0, e.g. in JupyterLab, where the bars show.
"""

from __future__ import annotations

import os
import time

ENV = "MEDSG_HEARTBEAT_S"
PREFIX = "[medsg]"


class Heartbeat:
    """Prints ``[medsg] <what>: <text>`` at most every ``MEDSG_HEARTBEAT_S`` seconds (and always when forced)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.every_s = float(os.environ.get(ENV, "0") or 0)
        self.last = time.monotonic()

    def beat(self, text: str, force: bool = False) -> None:
        """Print ``text`` when a heartbeat is due (or ``force``), flushed at once."""
        if self.every_s <= 0:
            return
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            print(f"{PREFIX} {self.what}: {text}", flush=True)

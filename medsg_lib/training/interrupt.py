"""Ctrl-C during training: finish the step, write a checkpoint, then stop.

A ``KeyboardInterrupt`` raised in the middle of a step would leave networks and optimisers half-updated, so no
consistent checkpoint could be written. :func:`deferred_interrupt` instead catches the first SIGINT (Ctrl-C in a
terminal, "interrupt kernel" in Jupyter), lets the current step finish and tells the loop, which writes a
checkpoint at that step and raises :class:`TrainingInterrupted`; a resume continues bit-exactly. A second Ctrl-C
stops at once, as usual. Only in single-process runs: under torchrun every rank gets the signal at a different
step, and the ranks must agree on the step of a checkpoint (torchrun stops them; resume from the last periodic
checkpoint).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after a checkpoint was written (the message names it)."""


@contextmanager
def deferred_interrupt(enabled: bool = True) -> Iterator[Callable[[], bool]]:
    """Within the block, the first SIGINT only sets a flag; yields the function that reads it. Disabled (the
    flag stays False, SIGINT acts as usual) when ``enabled`` is False, outside the main thread (where Python
    cannot install signal handlers) and when SIGINT is ignored (a process started with nohup or in the
    background keeps ignoring it)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main else None
    if not enabled or not in_main or previous is signal.SIG_IGN:  # SIG_IGN: nohup, a background job
        yield lambda: False
        return
    hits: list[int] = []

    def handler(signum: int, frame: object) -> None:
        hits.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        print(
            "\n[medsg] Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again stops at once, without)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

"""Stopping long commands cleanly: SIGTERM is handled like Ctrl-C, so a trainer saves and says how to
resume (``ctdiff train``, ``ctdiff train-autoencoder``)."""

from __future__ import annotations

import contextlib
import signal
import threading


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_saves():
    """SIGTERM (``kill PID``, a batch scheduler's pre-emption, torchrun stopping its workers) is
    handled like Ctrl-C: ``last.pt`` is saved and the command exits with the resume hint. A job
    started in the background by a non-interactive shell ignores SIGINT, so ``kill`` is the way to
    stop it cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Work the server does beside requests (the map, the vocabulary), and how it stops.

Such work runs in daemon threads, often inside native code (onnxruntime, openTSNE). A
process that exits while one of them is inside native code is aborted by the C++
runtime ("terminate called without an active exception", status -6), so the server
asks them to stop at shutdown and waits for them: each checks :func:`stop_point`
between steps.
"""

from __future__ import annotations

import threading


class BackgroundStopped(Exception):
    """Raised at a stop point once the server is shutting down."""


def stop_point(stopping: threading.Event | None) -> None:
    """Raise :class:`BackgroundStopped` if ``stopping`` is set."""
    if stopping is not None and stopping.is_set():
        raise BackgroundStopped

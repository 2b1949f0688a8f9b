"""Turn SIGINT/SIGTERM into a flag a training loop polls, so it can save and stop cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class StopFlag:
    def __init__(self) -> None:
        self.signal: int | None = None  # the signal received, None while running

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Within the block SIGINT and SIGTERM set the flag instead of killing the process; a second
    SIGINT raises KeyboardInterrupt at once. Outside the main thread this is a plain flag."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signal = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)

"""A bounded hand-off from the training thread to a background thread that
does not wake the background thread on every item.

A ``queue.Queue`` notifies its consumer on each ``put``: with a put per
training step, the consumer thread wakes every step and takes the GIL from
the training thread each time. Here the producer appends (one uncontended lock)
and the consumer drains on its own clock, every ``poll`` seconds, unless an item
is urgent (a flush, a close) or the queue is full (backpressure).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

__all__ = ["Handoff"]


class Handoff:
    """A bounded FIFO between one or more producers and one consumer.

    Args:
        maxsize: items held before ``put`` waits (backpressure).
        poll: seconds the consumer sleeps between drains when nothing is urgent.
    """

    def __init__(self, maxsize: int, *, poll: float = 0.05) -> None:
        self._items: deque = deque()
        self._maxsize = maxsize
        self._poll = poll
        self._cond = threading.Condition()

    def put(self, item: Any, *, urgent: bool = False, timeout: float | None = None) -> bool:
        """Append ``item``; wake the consumer only when ``urgent`` or full.

        Returns False when the queue stayed full for ``timeout`` seconds.
        """
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._cond.notify_all()  # let the consumer drain
                if not self._cond.wait_for(lambda: len(self._items) < self._maxsize, timeout):
                    return False
            self._items.append(item)
            if urgent:
                self._cond.notify_all()
        return True

    def get_batch(self, timeout: float, limit: int) -> list[Any]:
        """Up to ``limit`` items; waits at most ``min(timeout, poll)`` seconds when empty."""
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait(min(timeout, self._poll))
            batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            if batch:
                self._cond.notify_all()  # producers waiting for room
            return batch

    def qsize(self) -> int:
        return len(self._items)

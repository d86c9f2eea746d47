"""What waits to be sent to the dashboard, and when to send it.

:class:`Outbox` holds the link's notifications and decides their pace
(coalescing, buffering, a token bucket); :class:`Batch` is what it hands the
sender. No I/O and no threads: :class:`onthefly.link.client.DashboardLink`
calls it under its lock and passes the clock in, so every decision is
testable with a fake clock.

Example:
    >>> box = Outbox()
    >>> box.open()
    >>> box.put("log", {"level": "info", "message": "hi"})
    >>> [m.method for m in box.take(0.0).notifications()]
    ['log']
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onthefly.protocol.codec import Notification

__all__ = ["Outbox", "Batch", "columnar"]

RATE_PER_S = 20.0  # notifications per second, sustained
BURST = 20  # notifications sent back to back after a quiet spell
STEPS_INTERVAL_S = 0.1  # the shortest time between two `steps` messages
MAX_EVENTS = 1000  # queued notifications other than state and steps
MAX_STEP_ROWS = 100_000  # step rows held while the dashboard is slow to read


def columnar(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows as columns: one list per key (``step`` first), None where a row lacks the key.

    Example:
        >>> columnar([{"step": 1, "loss": 0.5}, {"step": 2, "lr": 0.1}])
        {'step': [1, 2], 'loss': [0.5, None], 'lr': [None, 0.1]}
    """
    rows = list(rows)
    keys: dict[str, None] = {"step": None}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return {k: [row.get(k) for row in rows] for k in keys}


@dataclass
class Batch:
    """What the sender sends now, and when to look again.

    Attributes:
        messages: notifications in sending order.
        step_rows: rows for one ``steps`` message after them (empty for none);
            made columnar by :meth:`notifications`, outside the link's lock.
        wait: seconds until something more may be due; None when nothing is pending.
    """

    messages: list[Notification]
    step_rows: Sequence[Mapping[str, Any]]
    wait: float | None

    def notifications(self) -> list[Notification]:
        steps = [Notification("steps", columnar(self.step_rows))] if self.step_rows else []
        return self.messages + steps


class Outbox:
    """What waits to be sent to the dashboard, and when to send it.

    No I/O and no threads: the link calls it under its lock and passes the
    clock in. ``state`` is coalesced to the latest and kept while closed;
    step rows are buffered and sent as one columnar ``steps`` message at most
    every ``steps_interval`` seconds; other notifications queue in order
    (when the queue is full the oldest ``log`` goes first). A token bucket
    caps the flow at ``rate`` messages per second with bursts of ``burst``;
    ``state`` goes ahead of the queue.
    """

    def __init__(
        self,
        *,
        rate: float = RATE_PER_S,
        burst: int = BURST,
        steps_interval: float = STEPS_INTERVAL_S,
        max_events: int = MAX_EVENTS,
        max_step_rows: int = MAX_STEP_ROWS,
    ):
        self.rate = rate
        self.burst = burst
        self.steps_interval = steps_interval
        self.max_events = max_events
        self.is_open = False
        self.dropped = 0
        self._state: Mapping[str, Any] | None = None
        self._events: deque[Notification] = deque()
        self.max_step_rows = max_step_rows
        self._rows: deque[Mapping[str, Any]] = deque(maxlen=max_step_rows)
        self._tokens = float(burst)
        self._refilled: float | None = None
        self._last_steps = -math.inf

    def open(self) -> Mapping[str, Any] | None:
        """Start accepting notifications; returns the state kept while closed, and forgets it."""
        self.is_open = True
        state, self._state = self._state, None
        return state

    def close(self) -> None:
        """Stop accepting; drop what was queued except the latest state."""
        self.is_open = False
        self.dropped += len(self._events) + len(self._rows)
        self._events.clear()
        self._rows.clear()

    def put(self, method: str, params: Mapping[str, Any]) -> None:
        """Queue a notification (``state`` replaces the previous one)."""
        if method == "state":
            self._state = params
            return
        if not self.is_open:
            self.dropped += 1
            return
        if len(self._events) >= self.max_events and not self._make_room(incoming=method):
            return
        self._events.append(Notification(method, params))

    def _make_room(self, *, incoming: str) -> bool:
        self.dropped += 1
        for i, event in enumerate(self._events):
            if event.method == "log":
                del self._events[i]
                return True
        if incoming == "log":
            return False
        self._events.popleft()
        return True

    def put_step(self, row: Mapping[str, Any]) -> bool:
        """Buffer one step's metrics; True when the buffer was empty (the sender should wake)."""
        if not self.is_open:
            return False
        if len(self._rows) == self._rows.maxlen:
            self.dropped += 1
        self._rows.append(row)
        return len(self._rows) == 1

    def take(self, now: float, *, flush: bool = False) -> Batch:
        """What to send now, and the seconds until more may be due.

        Args:
            now: a monotonic clock reading.
            flush: ignore the rate and the steps interval (used when closing).

        Returns:
            A :class:`Batch`.
        """
        if self._refilled is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        out: list[Notification] = []
        rows: Sequence[Mapping[str, Any]] = ()

        def spend() -> bool:
            if flush:
                return True
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

        if self._state is not None and spend():
            out.append(Notification("state", self._state))
            self._state = None
        while self._events and spend():
            out.append(self._events.popleft())
        if self._rows and (flush or now >= self._last_steps + self.steps_interval) and spend():
            rows, self._rows = self._rows, deque(maxlen=self.max_step_rows)
            self._last_steps = now
        token_wait = max(0.0, (1 - self._tokens) / self.rate)
        waits = []
        if self._state is not None or self._events:
            waits.append(token_wait)
        if self._rows:
            waits.append(max(token_wait, self._last_steps + self.steps_interval - now))
        return Batch(out, rows, max(0.0, min(waits)) if waits else None)

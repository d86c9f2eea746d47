"""Ctrl+C (SIGINT) and SIGTERM during a fit: keep what was recorded, say how to continue, then stop as usual.

:class:`Interrupts` is entered around a fit. In the main thread, while the
signal has its default handling (Python's ``KeyboardInterrupt`` for SIGINT,
termination for SIGTERM), it installs a handler for each; a handler the user
installed is left alone, as is everything in other threads. The handlers are
put back when the fit ends.

SIGINT raises ``KeyboardInterrupt`` itself (an uncaught one makes Python exit
with a SIGINT's status; a subclass would not), SIGTERM :class:`Terminated`, a
``BaseException`` that is not a ``KeyboardInterrupt``, so frameworks that turn
Ctrl+C into an exit of their own, such as Lightning, end their fit as for any
error. :meth:`Interrupts.at_boundary` says whether one was raised at a batch
boundary. A loop
that marks its steps (:attr:`Interrupts.in_step`) has the first signal that
arrives during a step wait for the step's end, so the interrupt lands at a
batch boundary where a checkpoint can be taken; a second signal interrupts at
once. After the loop has recorded the interrupt, :meth:`Interrupts.propagate`
lets it go on as it would have without OnTheFly: a SIGINT goes on as the
``KeyboardInterrupt`` (an uncaught one exits with a SIGINT's status), a SIGTERM
is delivered again under the previous handler (the process ends with a
SIGTERM's status, 143 / -15).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

__all__ = ["Interrupts", "Terminated", "interrupt_signal"]


class Terminated(BaseException):
    """SIGTERM during a fit (a scheduler ending the job).

    Attributes:
        signum: the signal.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt_signal(exc: BaseException) -> int | None:
    """The signal an exception stands for: SIGINT for any ``KeyboardInterrupt``, SIGTERM for :class:`Terminated`."""
    if isinstance(exc, Terminated):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    return None


class Interrupts:
    """The SIGINT and SIGTERM handlers of one fit (a context manager; see the module docstring).

    Args:
        defer: let the first signal during a step wait for the step's end (one process;
            off under several processes, where ranks could wait on each other).

    Example:
        >>> with Interrupts(defer=True) as interrupts:   # doctest: +SKIP
        ...     for batch in loader:
        ...         interrupts.check()                      # a boundary: a signal that waited raises here
        ...         interrupts.in_step = True
        ...         train_step(batch)
        ...         interrupts.in_step = False
    """

    def __init__(self, *, defer: bool = True) -> None:
        self.defer = defer
        self.in_step = False  # the loop is in a step: a first signal waits for its end
        self.consistent = False  # the loop is at a batch boundary: a checkpoint taken now resumes it exactly
        self.pending: int | None = None  # a signal waiting for the step's end
        self._previous: dict[int, Any] = {}
        self._raised: tuple[BaseException, bool] | None = None  # the last exception raised here, at a boundary?

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            try:
                if signal.getsignal(signum) is default:
                    self._previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not the main interpreter, or a platform without it
                pass
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):
                pass
        self.in_step, self.consistent, self.pending = False, False, None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.defer and self.in_step and self.pending is None:
            self.pending = signum  # at the step's end (check), or at once on a second signal
            return
        self._raise(signum, at_boundary=self.consistent and not self.in_step)

    def check(self) -> None:
        """At a batch boundary: raise the signal that waited for the step's end, if any."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self._raise(signum, at_boundary=True)

    def _raise(self, signum: int, *, at_boundary: bool) -> None:
        exc = Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt()
        self._raised = (exc, at_boundary)
        raise exc

    @property
    def raised_signal(self) -> int | None:
        """The signal of the last interrupt raised here (``None``: none), even when a framework replaced its
        exception (Lightning turns ``KeyboardInterrupt`` into ``sys.exit(1)``)."""
        if self._raised is None:
            return None
        return interrupt_signal(self._raised[0])

    def at_boundary(self, exc: BaseException) -> bool:
        """Whether ``exc`` was raised here at a batch boundary (a checkpoint taken now resumes the loop exactly)."""
        return self._raised is not None and self._raised[0] is exc and self._raised[1]

    def propagate(self, exc: BaseException, *, before_exit: Any = None) -> None:
        """Let a recorded interrupt go on as it would have without OnTheFly (call from the ``except``).

        For SIGTERM the handlers are put back, ``before_exit()`` is called (close the session's
        files) and the signal delivered again: under the default handling the process ends here
        with a SIGTERM's status. Otherwise this returns and the caller re-raises.
        """
        if isinstance(exc, Terminated):
            had_ours = signal.SIGTERM in self._previous
            self.restore()
            if had_ours and threading.current_thread() is threading.main_thread():
                if before_exit is not None:
                    try:
                        before_exit()
                    except Exception:
                        pass
                sys.stdout.flush()
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGTERM)
                raise SystemExit(128 + signal.SIGTERM)  # the previous handler returned: exit as the signal would

"""The fit's SIGINT/SIGTERM handlers: a signal during a step waits for the boundary, a second one does not,
the user's own handlers and other threads are left alone, and everything is put back."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from onthefly.session.interrupts import Interrupts, Terminated, interrupt_signal

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")


def default_sigterm() -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler here")


def test_a_signal_during_a_step_waits_for_the_boundary_and_is_raised_there() -> None:
    default_sigterm()
    with Interrupts(defer=True) as interrupts:
        assert interrupts.installed
        interrupts.in_step = True
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupts.pending == signal.SIGTERM  # waits for the step's end
        interrupts.in_step, interrupts.consistent = False, True
        with pytest.raises(Terminated) as info:
            interrupts.check()
        assert interrupts.at_boundary(info.value) and interrupt_signal(info.value) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_signal_during_a_step_is_raised_at_once_and_not_at_a_boundary() -> None:
    default_sigterm()
    with Interrupts(defer=True) as interrupts:
        interrupts.in_step = True
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Terminated) as info:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this thread before the next line
        assert not interrupts.at_boundary(info.value)
        assert interrupts.raised_signal == signal.SIGTERM


def test_a_users_handler_and_other_threads_are_left_alone() -> None:
    default_sigterm()
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with Interrupts() as interrupts:
            assert signal.getsignal(signal.SIGTERM) is mine
            assert signal.SIGTERM not in interrupts._previous
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(Interrupts().__enter__().installed))
    thread.start()
    thread.join()
    assert seen == [False]
    assert interrupt_signal(KeyboardInterrupt()) == signal.SIGINT and interrupt_signal(ValueError()) is None

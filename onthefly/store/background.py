"""Background threads give way to the training loop's threads for the CPU.

On Linux the nice value belongs to each thread (setpriority(2)): a thread
lowers its own priority with ``os.setpriority(os.PRIO_PROCESS, <its native
id>, ...)``. The shard writer's and the checkpoint writer's threads do so
when they start: on a machine whose cores the model's kernels keep busy,
they then run in the loop's idle moments (its Python work, data loading, a
wait for the writer) instead of taking a share from a compute thread, which
would hold up every thread of that parallel kernel. They still get a small
share when nothing is idle, and all of it whenever the loop waits for them
(a flush, the end of a pass).

Elsewhere (macOS, Windows) the same call would change the whole process or
does not exist, so nothing is done there.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["BACKGROUND_NICENESS", "lower_this_thread"]

BACKGROUND_NICENESS = 10
"""How much nicer than the thread that starts them background threads run (Linux nice steps)."""


def lower_this_thread() -> bool:
    """Lower the calling thread's CPU priority by :data:`BACKGROUND_NICENESS`; True when it did.

    Does nothing off Linux or when the OS refuses (it never raises).

    Example:
        >>> threading.Thread(target=lower_this_thread).start()  # doctest: +SKIP
    """
    if sys.platform != "linux" or not hasattr(os, "setpriority"):
        return False
    me = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, me)
        os.setpriority(os.PRIO_PROCESS, me, min(19, now + BACKGROUND_NICENESS))
    except OSError:
        return False
    return True

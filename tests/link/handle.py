"""A small real session handle for the link's tests.

It stands in for the Trainer's session handle until the integration tests:
a thread advances a step counter (one "batch" per millisecond), honours pause,
resume and stop at batch boundaries, pushes step metrics and state changes to
the link, and answers the protocol's methods with results of the documented
shapes. It offers no ``slice`` or ``export_slice``, so the "not offered"
answer can be tested.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from onthefly.errors import QueryError, TrainingError

__all__ = ["CounterHandle"]


class CounterHandle:
    """Counts steps on its own thread; the link calls it from its threads.

    Attributes:
        link: set to the DashboardLink to push metrics and states to.
        test_gate: ``test`` waits for it (set by default): clear it to make
            ``test`` slow.
        failures: method name -> exception that method raises.
    """

    def __init__(self, *, session: str = "s-test", project: str = "demo", run: str = "r1", step_seconds: float = 0.001):
        self.link: Any = None
        self.session = session
        self.project = project
        self.run = run
        self.step_seconds = step_seconds
        self.test_gate = threading.Event()
        self.test_gate.set()
        self.failures: dict[str, BaseException] = {}
        self._cond = threading.Condition()
        self._state = "running"
        self._step = 0
        self._epoch = 0
        self._thread = threading.Thread(target=self._loop, name="counter-training", daemon=True)

    # -- the "training loop" -------------------------------------------------

    def start(self) -> CounterHandle:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            with self._cond:  # a batch boundary
                self._cond.wait_for(lambda: self._state != "paused")
                if self._state == "finished":
                    return
                self._step += 1
                self._epoch = self._step // 100
                step, epoch = self._step, self._epoch
            if self.link is not None:
                self.link.push_step({"step": step, "epoch": epoch, "loss": 1.0 / step, "lr": 0.1})
            time.sleep(self.step_seconds)

    @property
    def step(self) -> int:
        with self._cond:
            return self._step

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def finish(self) -> None:
        with self._cond:
            self._state = "finished"
            self._cond.notify_all()
        if self._thread.ident is not None:
            self._thread.join(5)

    def _state_payload(self) -> dict[str, Any]:
        return {"state": self._state, "step": self._step, "epoch": self._epoch, "run": self.run}

    def _set_state(self, state: str) -> dict[str, Any]:
        with self._cond:
            if self._state != "finished":
                self._state = state
            self._cond.notify_all()
            payload = self._state_payload()
        if self.link is not None:
            self.link.notify("state", payload)
        return {"state": payload["state"]}

    def _check(self, method: str) -> None:
        if method in self.failures:
            raise self.failures[method]

    # -- the protocol's methods ------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            state = self._state_payload()
        run = {"id": self.run, "name": "base", "kind": "base", "status": "running", "parents": []}
        return {"state": state, "runs": [run]}

    def status(self) -> dict[str, Any]:
        self._check("status")
        with self._cond:
            payload = self._state_payload()
        payload.update(session=self.session, project=self.project, pid=os.getpid())
        return payload

    def pause(self) -> dict[str, Any]:
        self._check("pause")
        return self._set_state("paused")

    def resume(self, epochs: int | None = None) -> dict[str, Any]:
        self._check("resume")
        return self._set_state("running")

    def stop(self) -> dict[str, Any]:
        self._check("stop")
        return self._set_state("finished")

    def test(self, split: str = "test") -> dict[str, Any]:
        self._check("test")
        self.test_gate.wait(10)
        return {"split": split, "loss": 0.25, "metrics": {"accuracy": 0.9}, "count": 10}

    def checkpoint(self) -> dict[str, Any]:
        self._check("checkpoint")
        with self._cond:
            step, epoch = self._step, self._epoch
        return {"id": f"c{step}", "step": step, "epoch": epoch, "path": f"checkpoints/{self.run}/c{step}.safetensors"}

    def query(self, sql: str, params: Any = None, limit: int = 10000, format: str = "rows") -> dict[str, Any]:
        self._check("query")
        if "drop" in sql.lower():
            raise QueryError(f"refused {sql!r}: queries are read-only; use SELECT")
        return {"columns": ["step"], "types": ["BIGINT"], "rows": [[self.step]], "truncated": False}

    def report(
        self, run: str | None = None, split: str = "train", epoch: int | None = None, k: int = 20
    ) -> dict[str, Any]:
        self._check("report")
        if epoch is not None and epoch > self._epoch:
            raise TrainingError(f"epoch {epoch} of {split!r} has not finished: ask for epoch {self._epoch} or less")
        return {
            "run": run or self.run,
            "split": split,
            "epoch": self._epoch if epoch is None else epoch,
            "step": self.step,
            "count": 4,
            "mean": 0.5,
            "quantiles": {"p10": 0.1, "p50": 0.5, "p90": 0.9, "p99": 0.99},
            "hist": {"edges": [0.0, 0.5, 1.0], "counts": [2, 2]},
            "hardest": [{"sample_id": 3, "loss": 0.99}][:k],
        }

"""Notifications: what the outbox keeps, drops, batches and paces, and what reaches the dashboard."""

from __future__ import annotations

import time

from onthefly.link.outbox import Batch, Outbox, columnar

from .dashboard import DashboardServer, dash, link_env, make_link, wait_until  # noqa: F401  (fixtures)
from .handle import CounterHandle

# -- the outbox, on a clock we pass in ------------------------------------------------


def methods(batch: Batch) -> list[str]:
    return [m.method for m in batch.notifications()]


def test_state_keeps_only_the_latest_and_survives_while_closed():
    box = Outbox()
    box.put("state", {"state": "running", "step": 1})
    box.put("state", {"state": "paused", "step": 2})
    box.put("log", {"level": "info", "message": "dropped: nobody listens"})
    assert box.put_step({"step": 1}) is False
    assert box.open() == {"state": "paused", "step": 2}
    assert box.take(0.0) == Batch([], (), None)
    assert box.dropped == 1


def test_closing_drops_what_was_queued_but_not_the_state():
    box = Outbox()
    box.open()
    box.put("log", {"message": "a"})
    box.put_step({"step": 1})
    box.put("state", {"state": "paused"})
    box.close()
    assert box.dropped == 2
    assert box.open() == {"state": "paused"}


def test_state_goes_ahead_of_queued_notifications_then_steps_follow():
    box = Outbox()
    box.open()
    box.put("checkpoint", {"id": "c1"})
    assert box.put_step({"step": 1, "loss": 0.5}) is True
    assert box.put_step({"step": 2}) is False
    box.put("state", {"state": "paused"})
    batch = box.take(10.0)
    assert methods(batch) == ["state", "checkpoint", "steps"]
    assert batch.notifications()[2].params == {"step": [1, 2], "loss": [0.5, None]}
    assert batch.wait is None


def test_steps_leave_at_most_every_interval():
    box = Outbox(steps_interval=0.1)
    box.open()
    box.put_step({"step": 1})
    assert methods(box.take(5.0)) == ["steps"]
    box.put_step({"step": 2})
    early = box.take(5.04)
    assert early.notifications() == [] and abs(early.wait - 0.06) < 1e-9
    assert box.take(5.1).notifications()[0].params == {"step": [2]}


def test_the_token_bucket_allows_a_burst_then_the_rate():
    box = Outbox(rate=20, burst=20)
    box.open()
    for i in range(100):
        box.put("log", {"level": "info", "message": str(i)})
    burst = box.take(0.0)
    first = burst.notifications()
    assert len(first) == 20 and abs(burst.wait - 0.05) < 1e-9
    assert len(box.take(0.5).notifications()) == 10
    everything = box.take(0.5, flush=True).notifications()
    assert len(everything) == 70
    assert [m.params["message"] for m in first + everything][-1] == "99"


def test_a_full_queue_drops_the_oldest_log_first():
    box = Outbox(max_events=3)
    box.open()
    box.put("log", {"message": "old"})
    box.put("checkpoint", {"id": "c1"})
    box.put("test", {"loss": 1})
    box.put("epoch", {"epoch": 1})  # evicts the log
    box.put("log", {"message": "new"})  # no log left to evict, nothing worth evicting for it
    box.put("run", {"id": "r2"})  # evicts the oldest
    assert methods(box.take(0.0, flush=True)) == ["test", "epoch", "run"]
    assert box.dropped == 3


def test_the_step_buffer_is_bounded_and_keeps_the_newest_rows():
    box = Outbox(max_step_rows=3)
    box.open()
    for step in range(5):
        box.put_step({"step": step})
    assert box.take(0.0).notifications()[0].params == {"step": [2, 3, 4]}
    assert box.dropped == 2


def test_rows_become_columns_with_step_first_and_null_for_gaps():
    assert columnar([{"loss": 1.0, "step": 3}, {"step": 4, "acc": 0.5}]) == {
        "step": [3, 4],
        "loss": [1.0, None],
        "acc": [None, 0.5],
    }


# -- over the socket -------------------------------------------------------------------


def test_a_thousand_fast_steps_arrive_as_few_columnar_messages_in_order(dash, make_link):
    handle = CounterHandle()  # not started: only the rows below are pushed
    trial = make_link(port=dash.port, handle=handle)
    trainer = dash.accept()
    wait_until(lambda: trial.link.connected, what="link.connected")
    started = time.monotonic()
    for step in range(1000):
        trial.link.push_step({"step": step, "epoch": step // 100, "loss": 1.0 / (step + 1)})
    took = time.monotonic() - started

    def rows():
        return sum(len(n.params["step"]) for n in trainer.notifications("steps"))

    wait_until(lambda: rows() == 1000, what="all 1000 rows")
    batches = trainer.notifications("steps")
    assert [s for n in batches for s in n.params["step"]] == list(range(1000))
    assert [e for n in batches for e in n.params["epoch"]] == [s // 100 for s in range(1000)]
    assert all(len(n.params["loss"]) == len(n.params["step"]) for n in batches)
    # One message at once, then at most one per 0.1 s interval the pushes spanned.
    assert len(batches) <= 2 + int(took / 0.1)


def test_while_disconnected_only_the_latest_state_is_kept(link_env, make_link):
    class NoSnapshot(CounterHandle):
        def snapshot(self):
            raise RuntimeError("catalog is busy")

    with DashboardServer() as first:
        trial = make_link(port=first.port, handle=NoSnapshot())
        first.accept()
        wait_until(lambda: trial.link.connected, what="the first connection")
    wait_until(lambda: not trial.link.connected, what="the disconnection")
    link = trial.link
    link.notify("log", {"level": "info", "message": "nobody hears this"})
    link.notify("state", {"state": "paused", "step": 5, "epoch": 0})
    link.notify("state", {"state": "testing", "step": 6, "epoch": 0})
    link.push_step({"step": 6})
    with DashboardServer(port=first.port) as second:
        trainer = second.accept()
        state = trainer.wait_notification("state")
        assert state.params == {"state": "testing", "step": 6, "epoch": 0}
        trainer.request("status")  # everything sent before this answer has arrived
        assert [n.method for n in trainer.notifications() if n.method != "steps"] == ["state"]
        assert all(6 not in n.params["step"] for n in trainer.notifications("steps"))
    assert sum("could not send the run's snapshot" in line for line in trial.printed) == 1


def test_bad_notifications_are_dropped_with_one_line_and_never_raise(dash, make_link):
    trial = make_link(port=dash.port, handle=CounterHandle())
    trainer = dash.accept()
    wait_until(lambda: trial.link.connected, what="link.connected")
    for _ in range(3):
        trial.link.notify("gossip", {"x": 1})
        trial.link.notify("log", ["not", "a", "dict"])
        trial.link.push_step(None)
        trial.link.push_step({"step": object()})
    trial.link.notify("log", {"level": "info", "message": "still here"})
    assert trainer.wait_notification("log").params["message"] == "still here"
    assert sum("dropped notification 'gossip'" in line for line in trial.printed) == 1
    assert sum("dropped notification 'log'" in line for line in trial.printed) == 1


def test_close_sends_what_is_queued_and_is_idempotent(dash, make_link):
    trial = make_link(port=dash.port, handle=CounterHandle())
    trainer = dash.accept()
    wait_until(lambda: trial.link.connected, what="link.connected")
    for i in range(50):  # more than one burst: close flushes past the rate limit
        trial.link.notify("log", {"level": "info", "message": str(i)})
    trial.link.notify("state", {"state": "finished", "step": 0, "epoch": 0})
    trial.link.close()
    trial.link.close()
    assert trainer.wait_closed()
    assert [n.params["message"] for n in trainer.notifications("log")] == [str(i) for i in range(50)]
    assert trainer.notifications("state")[-1].params["state"] == "finished"
    assert not trial.link.connected

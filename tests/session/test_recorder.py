"""A new kind of run is recorded by holding a Recorder: a hand-written loop, no Trainer, no Lightning."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import onthefly
from onthefly.session.control import boundary_action
from onthefly.session.ranks import SingleProcess
from onthefly.session.recorder import Recorder
from onthefly.session.state import TrainingState


def test_a_hand_written_loop_records_rows_steps_and_checkpoints_through_the_recorder_alone(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    expected: dict[tuple[int, int], float] = {}

    recorder = Recorder("hand", home=tmp_path, connect_dashboard=False, progress=False)
    run_id = recorder.open_run(name="hand-written", kind="fork", config={"lr": 0.1})
    step = 0
    with recorder.training():
        for epoch in range(2):
            for ids in np.arange(12).reshape(3, 4):
                assert recorder.boundary()
                output = model(x[ids])
                per_sample = loss_fn(output, y[ids])
                optimizer.zero_grad()
                per_sample.mean().backward()
                optimizer.step()
                step += 1
                recorder.record_batch("train", epoch, step, ids, per_sample.detach(), output.detach(), y[ids])
                recorder.record_step({"step": step, "epoch": epoch, "loss": float(per_sample.detach().mean())})
                expected.update({(epoch, int(i)): float(v) for i, v in zip(ids, per_sample.detach())})
            recorder.end_pass("train", epoch, step)
            state = TrainingState(
                step=step, epoch=epoch + 1, model=model.state_dict(), optimizer=optimizer.state_dict()
            )
            recorder.checkpoint("manual", lambda state=state: state)
        recorder.finish("finished")

    session = recorder.session.status()["session"]
    assert recorder.session.dir.name == session
    con = onthefly.sql(session, home=tmp_path)
    rows = con.sql("SELECT run_id, epoch, sample_id, loss, label FROM samples ORDER BY epoch, sample_id").fetchall()
    assert [(r[1], r[2]) for r in rows] == sorted(expected)
    assert {r[0] for r in rows} == {run_id}
    assert all(abs(r[3] - expected[(r[1], r[2])]) < 1e-6 for r in rows)
    assert [r[4] for r in rows] == y.tolist() * 2  # the classification columns came with the rows
    assert con.sql("SELECT step, epoch FROM steps ORDER BY step").fetchall() == [(s, (s - 1) // 3) for s in range(1, 7)]
    assert con.sql("SELECT epoch, count FROM epochs WHERE split = 'train' ORDER BY epoch").fetchall() == [
        (0, 12),
        (1, 12),
    ]
    assert con.sql("SELECT reason, step, epoch, run_id FROM checkpoints ORDER BY step").fetchall() == [
        ("manual", 3, 1, run_id),
        ("manual", 6, 2, run_id),
    ]
    assert con.sql("SELECT name, kind, status FROM runs").fetchall() == [("hand-written", "fork", "finished")]
    recorder.close()


def test_the_handle_steers_a_hand_written_loop_at_its_boundaries(tmp_path):
    recorder = Recorder("hand", home=tmp_path, connect_dashboard=False, progress=False)
    recorder.open_run()
    with recorder.training():
        assert recorder.boundary()
        recorder.session.stop()
        assert not recorder.boundary() and recorder.stop_requested
        recorder.finish("stopped")
    assert recorder.session.query("SELECT status FROM runs")["rows"] == [["stopped"]]
    recorder.close()


def test_a_boundary_decides_stop_over_pause():
    assert boundary_action(pause=True, stop=True) == "stop"
    assert boundary_action(pause=True, stop=False) == "pause"
    assert boundary_action(pause=False, stop=False) == "go"


def test_one_process_answers_every_rank_question_trivially():
    ranks = SingleProcess()
    assert ranks.leader and ranks.records("val") and ranks.announce(3)
    assert ranks.from_leader(lambda: {"a": 1}) == {"a": 1} and ranks.agree_on_step(False, None) is False
    assert ranks.boundary(lambda hold: hold is None, lambda command, arg: None)
    assert ranks.own_rng({"python": 1}) == {"python": 1} and ranks.recorded(None) is None

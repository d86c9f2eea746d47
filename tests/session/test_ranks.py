"""What rank 0 does differently is the Ranks object's business: its decisions, without a process group."""

from __future__ import annotations

from onthefly import distributed as dist
from onthefly.session.ranks import TorchRanks


class FakeCollective:
    """Rank 0's commands from a list; records what this rank sends."""

    def __init__(self, commands=()):
        self.commands = list(commands)
        self.sent = []

    def command(self, code=dist.GO, arg=0):
        if self.commands:
            return self.commands.pop(0)
        self.sent.append((code, arg))
        return code, arg

    def step_agreement(self, finite, boundary):
        return finite, boundary


def ranks(rank: int, commands=()) -> TorchRanks:
    made = TorchRanks.__new__(TorchRanks)
    made.info = dist.DistInfo(rank, 2, rank, "gloo")
    made.leader, made.rank, made.world_size = rank == 0, rank, 2
    made._coll, made._leading, made._agreed = FakeCollective(commands), False, None
    return made


class Control:
    boundary_wanted = False


def test_a_boundary_rank_0_wants_nothing_at_costs_no_command():
    leader = ranks(0)
    assert leader.agree_on_step(True, Control())
    assert leader.boundary(lambda hold: False, lambda command, arg: None)  # not asked: the loop goes on
    assert leader._coll.sent == []


def test_rank_0_serves_the_boundary_and_tells_every_rank_to_go_on_or_stop():
    leader = ranks(0)
    assert not leader.boundary(lambda hold: False, lambda command, arg: None)
    assert leader._coll.sent == [(dist.STOP, 0)]


def test_another_rank_joins_what_rank_0_announces_until_it_says_go_on():
    served = []
    follower = ranks(1, commands=[(dist.HOLD, 0), (dist.TEST, 1), (dist.CHECKPOINT, 0), (dist.GO, 0)])
    assert follower.boundary(lambda hold: False, lambda command, arg: served.append((command, arg)))
    assert served == [(dist.TEST, 1), (dist.CHECKPOINT, 0)]
    assert not follower.announce(dist.TEST) and not follower.records("val") and follower.records("train")


def test_rank_0_announces_an_operation_only_while_it_serves_a_boundary():
    leader = ranks(0)
    assert leader.announce(dist.TEST, 1) and leader._coll.sent == []
    leader.boundary(lambda hold: leader.announce(dist.TEST, 1), lambda command, arg: None)
    assert leader._coll.sent == [(dist.TEST, 1), (dist.GO, 0)]


def test_each_rank_resumes_its_own_generators():
    rng = {"python": 0, "ranks": [{"python": "zero"}, {"python": "one"}]}
    assert ranks(1).own_rng(rng) == {"python": "one"}
    assert ranks(1).own_rng({"python": 0}) == {"python": 0}  # a single-process checkpoint

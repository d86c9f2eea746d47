"""The processes of a run behind one object: what rank 0 does differently is decided here.

A :class:`Recorder` and the loops that hold one never ask which rank they run
on; they call a :class:`Ranks` object, which is :class:`SingleProcess` (every
method trivial) or :class:`TorchRanks` (``torch.distributed``, the rules of
:mod:`onthefly.distributed`: rank 0 leads, every rank writes its own rows,
checkpoints are written once).

Example:
    >>> ranks = SingleProcess()
    >>> ranks.leader, ranks.from_leader(lambda: 3), ranks.all_agree(True)
    (True, 3, True)
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .. import distributed as dist
from ..errors import ConfigError
from ..store.records import PassKey

__all__ = ["Lead", "Ranks", "Serve", "SingleProcess", "TorchRanks", "join_ranks"]

Lead = Callable[[Callable[[], None] | None], bool]
"""Rank 0's part of a batch boundary: given how to tell the other ranks to keep
waiting (None on one process), serve operations and pauses; True to go on."""

Serve = Callable[[int, int], None]
"""How a rank other than 0 runs an operation rank 0 announced: ``(command, arg)``."""

TEST, CHECKPOINT = dist.TEST, dist.CHECKPOINT


class Ranks(Protocol):
    """What a run does across its processes. Every method is called on every rank, in the same order."""

    leader: bool
    """True on the process that owns the session's catalog, its checkpoints, the link and the console."""

    interrupts_wait_for_the_step: bool
    """True when a Ctrl+C or SIGTERM may wait for the step to end and take a checkpoint there (one process);
    several processes stop at once, each on its own signal, with no collective left to agree on a boundary."""

    def open_files(self, open_session: Callable[[], Any], *, existing: Any, project: str) -> Any:
        """The session's files: ``open_session()`` on rank 0, this rank's folder in it elsewhere
        (``existing`` when this rank opened it before)."""

    def from_leader(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` run on rank 0 only, its JSON-able result on every rank."""

    def float_from_leader(self, compute: Callable[[], float | None]) -> float | None:
        """``compute()`` run on rank 0 only, its float (or None) on every rank (one small message)."""

    def all_agree(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def adopt_run(self, files: Any, run_id: str, name: str) -> None:
        """Record rank 0's run in this rank's files too (nothing on rank 0)."""

    def split_loader(self, loader: Any, *, seed: int) -> Any:
        """This rank's part of a train ``DataLoader``."""

    def recorded(self, sampler: Any) -> int | None:
        """How many of this rank's samples per epoch are real (None: all of them)."""

    def wrap_model(self, model: Any, device: Any) -> tuple[Any, bool]:
        """``(model to train, wrapped)``: the model inside DistributedDataParallel when there are several ranks."""

    def own_rng(self, rng: dict) -> dict:
        """This rank's generators out of a checkpoint's RNG state."""

    def checkpoint_rng(self, rng: dict) -> dict | None:
        """The RNG state a checkpoint holds (every rank's generators), on the rank that writes it; else None."""

    def agree_on_step(self, finite: bool, control: Any) -> bool:
        """Whether the batch's loss is finite on every rank; notes whether rank 0's ``control``
        (its :class:`~onthefly.session.control.Controller`) wants the next boundary."""

    def boundary(self, lead: Lead, serve: Serve) -> bool:
        """The batch boundary: rank 0 runs ``lead``, the others do what it says. True: the loop goes on."""

    def more_work(self, lead: Callable[[], int], serve: Serve) -> int:
        """After the run: rank 0 asks ``lead()`` how many more epochs, every rank gets the answer."""

    def announce(self, command: int, arg: int = 0) -> bool:
        """Before an operation the other ranks join: tell them (when rank 0 serves a boundary).

        Returns:
            True on the process that records the operation's result.
        """

    def records(self, what: str) -> bool:
        """Whether this process records ``what``: a split's rows ("train", "val", "test") or the step
        rows ("steps"). Every rank records its train rows; the rest is rank 0's."""

    def split_batches(self, batches: Any, *, seed: int) -> None:
        """Make Lightning's tracked train loader iterate this rank's part of the data."""

    def summarise_pass(
        self,
        sealed: concurrent.futures.Future,
        files: Any,
        key: PassKey,
        step: int,
        metrics: dict | None,
        done: Callable[[concurrent.futures.Future], None],
    ) -> None:
        """Once a train pass is sealed on every rank, ``done`` gets the summary of every rank's rows."""


class SingleProcess:
    """One process: every rank question has the trivial answer."""

    leader = True
    interrupts_wait_for_the_step = True
    rank, world_size = 0, 1

    def open_files(self, open_session: Callable[[], Any], *, existing: Any, project: str) -> Any:
        return open_session()

    def from_leader(self, compute: Callable[[], Any]) -> Any:
        return compute()

    def float_from_leader(self, compute: Callable[[], float | None]) -> float | None:
        return compute()

    def all_agree(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        pass

    def adopt_run(self, files: Any, run_id: str, name: str) -> None:
        pass

    def split_loader(self, loader: Any, *, seed: int) -> Any:
        return loader

    def recorded(self, sampler: Any) -> int | None:
        return None

    def wrap_model(self, model: Any, device: Any) -> tuple[Any, bool]:
        return model, False

    def own_rng(self, rng: dict) -> dict:
        return rng

    def checkpoint_rng(self, rng: dict) -> dict | None:
        return rng

    def agree_on_step(self, finite: bool, control: Any) -> bool:
        return finite

    def boundary(self, lead: Lead, serve: Serve) -> bool:
        return lead(None)

    def more_work(self, lead: Callable[[], int], serve: Serve) -> int:
        return lead()

    def announce(self, command: int, arg: int = 0) -> bool:
        return True

    def records(self, what: str) -> bool:
        return True

    def split_batches(self, batches: Any, *, seed: int) -> None:
        pass

    def summarise_pass(
        self,
        sealed: concurrent.futures.Future,
        files: Any,
        key: PassKey,
        step: int,
        metrics: dict | None,
        done: Callable[[concurrent.futures.Future], None],
    ) -> None:
        sealed.add_done_callback(done)


class TorchRanks:
    """Several processes of one ``torch.distributed`` process group; rank 0 leads.

    At a batch boundary rank 0 sends every rank one command (go on, stop, hold,
    test, checkpoint), so all of them pause, test, checkpoint and stop at the
    same batch. The batch's one all-reduce (:meth:`agree_on_step`) also says
    whether rank 0 wants the next boundary; when it does not, every rank passes
    it without the command: one collective a batch.

    Args:
        info: this process' rank and world size (:func:`onthefly.distributed.detect`).
    """

    def __init__(self, info: dist.DistInfo) -> None:
        self.info = info
        self.leader = info.leader
        self.interrupts_wait_for_the_step = False
        self.rank, self.world_size = info.rank, info.world_size
        self._coll = dist.Collective(info)
        self._leading = False  # rank 0 serves a boundary the other ranks wait at
        self._agreed: bool | None = None  # rank 0 wants the next boundary (None: not agreed this batch)

    def open_files(self, open_session: Callable[[], Any], *, existing: Any, project: str) -> Any:
        files = open_session() if self.leader else None
        where = self._coll.broadcast_json({"dir": str(files.dir), "id": files.id} if self.leader else None)
        if files is None:
            files = (
                existing
                if existing is not None
                else dist.RankFiles(Path(where["dir"]), session_id=where["id"], project=project, rank=self.rank)
            )
        return files

    def from_leader(self, compute: Callable[[], Any]) -> Any:
        return self._coll.broadcast_json(compute() if self.leader else None)

    def float_from_leader(self, compute: Callable[[], float | None]) -> float | None:
        return self._coll.broadcast_float(compute() if self.leader else None)

    def all_agree(self, flag: bool) -> bool:
        return self._coll.all_true(flag)

    def barrier(self) -> None:
        self._coll.barrier()

    def adopt_run(self, files: Any, run_id: str, name: str) -> None:
        if not self.leader:
            files.add_run(run_id, name)

    def split_loader(self, loader: Any, *, seed: int) -> Any:
        return dist.distributed_loader(loader, rank=self.rank, world_size=self.world_size, seed=seed)

    def recorded(self, sampler: Any) -> int | None:
        return dist.recorded_count(sampler, rank=self.rank)

    def wrap_model(self, model: Any, device: Any) -> tuple[Any, bool]:
        import torch

        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            return model, False
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), True

    def own_rng(self, rng: dict) -> dict:
        ranks = rng.get("ranks") if isinstance(rng, dict) else None
        if ranks and len(ranks) == self.world_size:
            return ranks[self.rank]
        return rng

    def checkpoint_rng(self, rng: dict) -> dict | None:
        states = self._coll.gather_json(dist.pack_rng(rng))
        if not self.leader:
            return None
        return {**rng, "ranks": [dist.unpack_rng(state) for state in states]}

    def agree_on_step(self, finite: bool, control: Any) -> bool:
        finite, wanted = self._coll.step_agreement(finite, self.leader and control.boundary_wanted)
        self._agreed = wanted or bool(self._agreed)
        return finite

    def boundary(self, lead: Lead, serve: Serve) -> bool:
        agreed, self._agreed = self._agreed, None
        if agreed is False:  # the batch's all-reduce said rank 0 wants nothing here
            return True
        if not self.leader:
            command, _ = self._follow(serve)
            return command == dist.GO
        self._leading = True
        try:
            go_on = lead(lambda: self._coll.command(dist.HOLD))  # the other ranks keep waiting
        finally:
            self._leading = False
        self._coll.command(dist.GO if go_on else dist.STOP)
        return go_on

    def more_work(self, lead: Callable[[], int], serve: Serve) -> int:
        if not self.leader:
            command, more = self._follow(serve)
            return more if command == dist.GO else 0
        self._leading = True
        try:
            more = lead()
        finally:
            self._leading = False
        self._coll.command(dist.GO, more)
        return more

    def announce(self, command: int, arg: int = 0) -> bool:
        if self._leading:
            self._coll.command(command, arg)
        return self.leader

    def records(self, what: str) -> bool:
        return self.leader or what == "train"  # every rank runs the whole evaluation loader; rank 0 records it

    def split_batches(self, batches: Any, *, seed: int) -> None:
        batches.distribute(rank=self.rank, world_size=self.world_size, seed=seed)

    def summarise_pass(
        self,
        sealed: concurrent.futures.Future,
        files: Any,
        key: PassKey,
        step: int,
        metrics: dict | None,
        done: Callable[[concurrent.futures.Future], None],
    ) -> None:
        sealed.result()  # this rank's pass is sealed and listed
        self._coll.barrier()
        if self.leader:
            summary = concurrent.futures.Future()
            summary.set_result(dist.union_pass_summary(files.dir, files.catalog, key, step, metrics))
            done(summary)

    def _follow(self, serve: Serve) -> tuple[int, int]:
        """Ranks other than 0: do what rank 0 says until it says go on (GO) or stop (STOP)."""
        while True:
            command, arg = self._coll.command()
            if command in (dist.GO, dist.STOP):
                return command, arg
            if command != dist.HOLD:
                serve(command, arg)


def join_ranks(*, init: bool = True, required: str | None = None) -> Ranks:
    """This process' ranks: :class:`TorchRanks` under ``torchrun`` (or an initialised process group), else one.

    Args:
        init: initialise the process group from torchrun's variables when none exists.
        required: when set, several processes are expected: no process group is an
            error, with this text as what to do.

    Raises:
        ConfigError: ``required`` and no multi-process group.
    """
    info = dist.detect(init=init)
    if info is None:
        if required is not None:
            raise ConfigError(required)
        return SingleProcess()
    return TorchRanks(info)

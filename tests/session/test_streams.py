"""Streaming data: sample ids, an unknown length, and resuming a stream's position."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from onthefly.errors import ConfigError
from onthefly.session.console import Console
from onthefly.session.sampling import TrackedLoader
from onthefly.session.streams import (
    ID_KEYS,
    StreamCursor,
    batch_sample_ids,
    is_stateful,
    is_stream,
    iterate_stream,
    loader_length,
    loader_state,
    plan_resume,
    restore_loader,
    stream_position,
)
from onthefly.store.checkpoints.checkpoints import load_checkpoint, save_checkpoint

StatefulDataLoader = pytest.importorskip("torchdata.stateful_dataloader").StatefulDataLoader

N = 10


class Stream(IterableDataset):
    """A generator-backed stream: sample i holds the value i; no __len__, no state."""

    def __init__(self, n: int = N, *, with_id: str | None = None) -> None:
        self.n, self.with_id = n, with_id

    def __iter__(self):
        for i in range(self.n):
            item = {"x": torch.tensor([float(i)]), "y": torch.tensor(i % 2)}
            if self.with_id:
                item[self.with_id] = torch.tensor(100 + i)
            yield item


class Opaque:
    """Something a checkpoint cannot store."""


class OpaqueStateLoader(StatefulDataLoader):
    def state_dict(self):
        return {**super().state_dict(), "thing": Opaque()}


def values(batch) -> list[float]:
    return batch["x"].view(-1).tolist()


# ----------------------------------------------------------------- ids
@pytest.mark.parametrize("key", ID_KEYS)
def test_ids_come_from_each_id_key_of_a_dict_batch(key: str) -> None:
    ids, source = batch_sample_ids({"x": torch.zeros(3, 2), key: torch.tensor([5, 3, 9])}, start=40)
    assert ids.dtype == np.int64 and ids.tolist() == [5, 3, 9]
    assert source == f"key:{key}"


def test_the_first_id_key_in_order_wins_and_lists_work() -> None:
    ids, source = batch_sample_ids({"index": [1, 2], "idx": np.array([7, 8]), "x": torch.zeros(2)}, start=0)
    assert (ids.tolist(), source) == ([7, 8], "key:idx")


def test_a_sample_ids_callable_wins_over_keys_and_positions() -> None:
    batch = {"x": torch.zeros(2, 1), "id": torch.tensor([1, 2]), "uid": torch.tensor([30, 31])}
    ids, source = batch_sample_ids(batch, start=0, sample_ids=lambda b: b["uid"])
    assert (ids.tolist(), source) == ([30, 31], "sample_ids")


def test_without_ids_the_position_in_the_stream_is_used() -> None:
    ids, source = batch_sample_ids((torch.zeros(4, 1), torch.zeros(4)), start=12)
    assert (ids.tolist(), source) == ([12, 13, 14, 15], "position")


def test_an_id_key_of_strings_or_floats_falls_back_to_positions_and_says_so() -> None:
    ids, source = batch_sample_ids({"x": torch.zeros(2), "id": ["a7", "b2"]}, start=3)
    assert (ids.tolist(), source) == ([3, 4], "position (key id holds no integers)")
    ids, source = batch_sample_ids({"x": torch.zeros(2), "idx": torch.tensor([0.5, 1.5])}, start=0)
    assert source.startswith("position")


def test_wrong_id_counts_and_non_integer_callables_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="holds 3 ids for a batch of 2"):
        batch_sample_ids({"x": torch.zeros(2), "idx": torch.tensor([1, 2, 3])}, start=0)
    with pytest.raises(ConfigError, match="one integer per sample"):
        batch_sample_ids({"x": torch.zeros(2)}, start=0, sample_ids=lambda b: ["a", "b"])
    with pytest.raises(ConfigError, match="one integer per sample"):
        batch_sample_ids({"x": torch.zeros(2)}, start=0, sample_ids=lambda b: torch.tensor([1]))


def test_iterate_stream_counts_positions_across_batches_and_dropped_batches() -> None:
    loader = DataLoader(Stream(), batch_size=3)
    cursor = StreamCursor()
    pairs = list(iterate_stream(loader, skip=2, cursor=cursor))
    assert [ids.tolist() for ids, _ in pairs] == [[6, 7, 8], [9]]
    assert [values(b) for _, b in pairs] == [[6.0, 7.0, 8.0], [9.0]]
    assert (cursor.batches, cursor.samples) == (4, 10)


def test_tracked_loader_on_a_stream_uses_id_keys_positions_or_the_callable() -> None:
    keyed = TrackedLoader(DataLoader(Stream(with_id="sample_id"), batch_size=4), seed=0)
    assert [ids.tolist() for ids, _ in keyed] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109]]
    plain = TrackedLoader(DataLoader(Stream(), batch_size=4), seed=0)
    for epoch in range(2):  # positions are epoch-local
        plain.set_epoch(epoch)
        assert [ids.tolist() for ids, _ in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    called = TrackedLoader(
        DataLoader(Stream(), batch_size=5), seed=0, sample_ids=lambda b: (b["x"].view(-1) * 2).long()
    )
    assert [ids.tolist() for ids, _ in called] == [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18]]


def test_a_sample_ids_callable_applies_to_map_style_datasets_too() -> None:
    data = TensorDataset(torch.arange(6.0))
    tracked = TrackedLoader(DataLoader(data, batch_size=4), seed=0, sample_ids=lambda b: b[0].long() + 1000)
    assert [ids.tolist() for ids, _ in tracked] == [[1000, 1001, 1002, 1003], [1004, 1005]]
    with pytest.raises(ConfigError, match="sample_ids must be a function"):
        TrackedLoader(DataLoader(data, batch_size=4), seed=0, sample_ids=[1, 2])


# ----------------------------------------------------------------- length
def test_loader_length_is_none_for_streams_and_never_raises() -> None:
    assert loader_length(DataLoader(Stream(), batch_size=3)) is None
    assert loader_length(StatefulDataLoader(Stream(), batch_size=3)) is None
    assert loader_length(DataLoader(TensorDataset(torch.zeros(7)), batch_size=3)) == 3
    assert loader_length(object()) is None

    class Broken:
        def __len__(self):
            raise RuntimeError("no")

    assert loader_length(Broken()) is None
    assert TrackedLoader(DataLoader(Stream(), batch_size=3), seed=0).length is None
    assert TrackedLoader(DataLoader(TensorDataset(torch.zeros(7)), batch_size=3), seed=0).length == 3


def test_progress_without_a_total_opens_and_counts() -> None:
    console = Console(enabled=True, stream=io.StringIO())
    console._bar_wanted = True
    console.start(max_epochs=3, batches_per_epoch=None, epoch=1)
    assert console._bar.total is None and console._bar.n == 0
    console.step(1, 0.5)
    assert console._bar.n == 1
    console.close()


# ----------------------------------------------------------------- state
def test_is_stream_and_is_stateful() -> None:
    assert is_stream(DataLoader(Stream())) and not is_stream(DataLoader(TensorDataset(torch.zeros(2))))
    assert is_stateful(StatefulDataLoader(Stream())) and not is_stateful(DataLoader(Stream()))


def test_loader_state_is_none_for_stateless_and_a_note_for_unstorable_states() -> None:
    assert loader_state(DataLoader(Stream(), batch_size=3)) == (None, None)
    state, note = loader_state(StatefulDataLoader(Stream(), batch_size=3))
    assert isinstance(state, dict) and note is None
    state, note = loader_state(OpaqueStateLoader(Stream(), batch_size=3))
    assert state is None and "cannot be stored in a checkpoint" in note and "thing" in note


def test_a_stateful_loader_state_round_trips_through_a_safetensors_checkpoint(tmp_path) -> None:
    loader = StatefulDataLoader(Stream(), batch_size=3)
    batches = iter(loader)
    next(batches), next(batches)
    saved = stream_position(loader, batches=2, samples=6)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model={"w": torch.zeros(1)}, sampler={"epoch": 0, "batch": 2, "stream": saved})
    raw = path.read_bytes()
    assert b"pickle" not in raw and b"\x80\x04" not in raw[:64]
    loaded = load_checkpoint(path).sampler["stream"]
    assert loaded == saved


@pytest.mark.parametrize("workers", [0, 2])
def test_resuming_a_stateful_loader_gives_exactly_the_remaining_batches(tmp_path, workers: int) -> None:
    class Sharded(Stream):  # each worker yields its share, so the whole stream is read once
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            for item in super().__iter__():
                if info is None or int(item["x"]) % info.num_workers == info.id:
                    yield item

    def make():
        return StatefulDataLoader(Sharded(), batch_size=2, num_workers=workers)

    full = [values(b) for b in make()]
    loader = make()
    batches = iter(loader)
    trained = [values(next(batches)) for _ in range(2)]
    path = tmp_path / "ck.safetensors"
    save_checkpoint(
        path, model={"w": torch.zeros(1)}, sampler={"stream": stream_position(loader, batches=2, samples=4)}
    )
    del batches, loader
    fresh = make()
    pairs, message = restore_loader(fresh, load_checkpoint(path).sampler["stream"], batches_seen=2)
    rest = list(pairs)
    assert trained + [values(b) for _, b in rest] == full
    positions = [ids.tolist() for ids, _ in rest]  # the positions the uninterrupted epoch gives these batches
    assert [i for p in positions for i in p] == list(range(4, N))
    assert [len(p) for p in positions] == [len(b) for b in full[2:]]
    assert "saved state" in message and "\n" not in message


def test_resuming_a_stateless_stream_drops_the_batches_already_seen_and_says_so() -> None:
    full = [values(b) for b in DataLoader(Stream(), batch_size=3)]
    saved = stream_position(DataLoader(Stream(), batch_size=3), batches=2, samples=6)
    assert saved["loader"] is None
    pairs, message = restore_loader(DataLoader(Stream(), batch_size=3), saved, batches_seen=2)
    rest = list(pairs)
    assert [values(b) for _, b in rest] == full[2:]
    assert [ids.tolist() for ids, _ in rest] == [[6, 7, 8], [9]]
    assert message.startswith("resuming the stream by reading and dropping the 2 batches")
    assert "no state_dict" in message and "\n" not in message


def test_a_state_left_out_of_the_checkpoint_resumes_by_skipping_with_the_reason() -> None:
    loader = OpaqueStateLoader(Stream(), batch_size=3)
    batches = iter(loader)
    next(batches)
    saved = stream_position(loader, batches=1, samples=3)
    pairs, message = restore_loader(OpaqueStateLoader(Stream(), batch_size=3), saved, batches_seen=1)
    assert [values(b) for _, b in pairs] == [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0], [9.0]]
    assert "cannot be stored" in message


def test_plan_resume_at_an_epoch_start_says_nothing_and_older_checkpoints_skip() -> None:
    plan = plan_resume(DataLoader(Stream()), None, batches_seen=0)
    assert (plan.restored, plan.skip, plan.message) == (False, 0, None)
    plan = plan_resume(StatefulDataLoader(Stream()), None, batches_seen=3)
    assert plan.skip == 3 and "holds no state of this loader" in plan.message


def test_a_loader_refusing_the_saved_state_raises_a_config_error() -> None:
    class Refusing(StatefulDataLoader):
        def load_state_dict(self, state):
            raise ValueError("not mine")

    with pytest.raises(ConfigError, match="could not load the state saved"):
        plan_resume(Refusing(Stream()), {"batches": 1, "samples": 1, "loader": {"a": 1}}, batches_seen=1)


@pytest.mark.parametrize("stateful", [True, False])
def test_tracked_loader_saves_and_resumes_a_stream_mid_epoch(tmp_path, stateful: bool) -> None:
    def make():
        loader_type = StatefulDataLoader if stateful else DataLoader
        return TrackedLoader(loader_type(Stream(), batch_size=3), seed=0)

    full = [(ids.tolist(), values(b)) for ids, b in make()]
    tracked = make()
    batches = iter(tracked)
    first = [next(batches), next(batches)]
    del batches  # the loop's epoch iterator is gone by the time a final checkpoint is taken
    gc.collect()
    saved = tracked.stream_position()
    assert (saved["batches"], saved["samples"]) == (2, 6)
    assert (saved["loader"] is not None) == stateful
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model={"w": torch.zeros(1)}, sampler={"epoch": 0, "batch": 2, "stream": saved})
    resumed = make()
    message = resumed.resume(2, saved=load_checkpoint(path).sampler["stream"])
    rest = [(ids.tolist(), values(b)) for ids, b in resumed]
    assert [(i.tolist(), values(b)) for i, b in first] + rest == full
    assert ("saved state" in message) == stateful
    assert resumed.stream_position()["batches"] == 4
    assert [ids.tolist() for ids, _ in resumed] == [f[0] for f in full]  # the next epoch is whole again


def test_tracked_loader_resume_on_a_map_style_dataset_skips_at_the_sampler() -> None:
    tracked = TrackedLoader(DataLoader(TensorDataset(torch.arange(6.0)), batch_size=2), seed=0)
    assert tracked.stream_position() is None
    assert tracked.resume(2) is None
    assert [ids.tolist() for ids, _ in tracked] == [[4, 5]]

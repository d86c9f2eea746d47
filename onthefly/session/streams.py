"""Streaming data (an ``IterableDataset``: no ``len``, no sampler): sample ids,
length and the data position a checkpoint keeps.

**Sample ids of a stream**, first that applies (:func:`batch_sample_ids`):

1. a ``sample_ids=`` callable the user gives, ``batch -> ids`` (one integer
   per sample: a tensor, an array or a list);
2. a key of a dict batch, the first of :data:`ID_KEYS` (``sample_id``,
   ``id``, ``idx``, ``index``) present, holding one integer per sample;
3. else the sample's position in the epoch's stream: the first sample of an
   epoch is 0, the next 1, and so on, counted across batches in the order they
   arrive. Positions restart at 0 each epoch. They are ids only as far as the
   stream is repeatable: the same sample has the same id in two epochs (or two
   runs) only when the stream yields the same samples in the same order. A
   stream that shuffles, or several workers that interleave differently, give
   one id to different samples; give an id key or ``sample_ids=`` then.

A key holding something that is not integers (strings, as in many text
datasets) is not used: positions are, and :func:`batch_sample_ids` says so in
its ``source`` (a ``sample_ids=`` callable that maps those values to integers
fixes it).

**Length.** :func:`loader_length` is ``len(loader)`` when the loader has one
and ``None`` when it does not (an ``IterableDataset`` without ``__len__``);
it never raises. Progress then counts batches without a total.

**Data position.** A checkpoint taken in the middle of an epoch keeps
:func:`stream_position`: the batches and samples of the epoch already trained
and, for a *stateful* loader (one with ``state_dict`` and ``load_state_dict``,
such as torchdata's ``StatefulDataLoader``), the loader's own state. The state
is stored in the safetensors checkpoint like the rest of the training state:
tensors as tensors, everything else as JSON (nothing is pickled); a state
holding another kind of object is left out, with a note, and that resume
re-reads instead. :func:`restore_loader` resumes: a stateful loader loads its
state and goes on from there (its batches already trained are not produced
again); any other stream is read from its start and the batches already
trained are dropped, which costs their loading time and gives the same
batches only if the stream is repeatable. Either way it returns one line that
says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from onthefly.errors import ConfigError
from onthefly.session.batches import batch_size_of
from onthefly.store.checkpoints.tree import flatten

__all__ = [
    "ID_KEYS",
    "SampleIds",
    "StreamCursor",
    "StreamResume",
    "batch_sample_ids",
    "is_stateful",
    "is_stream",
    "iterate_stream",
    "loader_length",
    "loader_state",
    "plan_resume",
    "restore_loader",
    "stream_position",
]

ID_KEYS = ("sample_id", "id", "idx", "index")
"""Keys of a dict batch that hold the batch's sample ids, in the order they are looked for."""

SampleIds = Callable[[Any], Any]
"""A user function ``batch -> ids``: one integer per sample of the batch."""


def is_stream(loader: Any) -> bool:
    """Whether the loader reads an ``IterableDataset`` (no sampler, no indices).

    Example:
        >>> is_stream(DataLoader(torch.utils.data.TensorDataset(torch.zeros(2))))
        False
    """
    return isinstance(getattr(loader, "dataset", None), IterableDataset)


def is_stateful(loader: Any) -> bool:
    """Whether the loader has ``state_dict`` and ``load_state_dict`` (torchdata's ``StatefulDataLoader``)."""
    return callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))


def loader_length(loader: Any) -> int | None:
    """Batches per epoch, or ``None`` when the loader cannot say; never raises.

    A ``DataLoader`` over an ``IterableDataset`` without ``__len__`` raises
    ``TypeError`` from ``len``; so do objects without ``__len__``. Any error
    from ``__len__`` gives ``None``, as does a value that is not a
    non-negative integer.

    Example:
        >>> class Stream(IterableDataset):
        ...     def __iter__(self):
        ...         yield from range(3)
        >>> loader_length(DataLoader(Stream(), batch_size=2)) is None
        True
        >>> loader_length(DataLoader(torch.utils.data.TensorDataset(torch.zeros(5)), batch_size=2))
        3
    """
    try:
        length = len(loader)
    except Exception:  # TypeError (no len), NotImplementedError, a dataset's own error
        return None
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        return None
    return int(length)


def batch_sample_ids(
    batch: Any, *, start: int, sample_ids: SampleIds | None = None, size: int | None = None
) -> tuple[np.ndarray, str]:
    """Decide the sample ids of one batch of a stream.

    Args:
        batch: what the loader yielded.
        start: the position in the epoch's stream of the batch's first sample.
        sample_ids: the user's ``batch -> ids`` function, if any; it wins.
        size: the batch size, when the caller knows it (else read from the batch).

    Returns:
        ``(ids, source)``: int64 ids of shape ``[B]``, and where they came from:
        ``"sample_ids"``, ``"key:<name>"``, ``"position"``, or
        ``"position (key <name> holds no integers)"``.

    Raises:
        ConfigError: ``sample_ids`` returned something that is not one integer
            per sample, or an id key holds a number of ids other than the batch size.

    Example:
        >>> ids, source = batch_sample_ids({"x": torch.zeros(2, 3), "idx": torch.tensor([7, 9])}, start=0)
        >>> ids.tolist(), source
        ([7, 9], 'key:idx')
        >>> ids, source = batch_sample_ids((torch.zeros(3, 1), torch.zeros(3)), start=6)
        >>> ids.tolist(), source
        ([6, 7, 8], 'position')
    """
    if size is None:
        size = batch_size_of(batch)
    if sample_ids is not None:
        raw = sample_ids(batch)
        ids = _as_ids(raw)
        if ids is None or len(ids) != size:
            raise ConfigError(
                f"sample_ids returned {_describe_ids(raw)} for a batch of {size} samples; "
                "it must return one integer per sample (a tensor, array or list of ints)."
            )
        return ids, "sample_ids"
    if isinstance(batch, Mapping):
        for key in ID_KEYS:
            if key not in batch:
                continue
            ids = _as_ids(batch[key])
            if ids is None:
                return _positions(start, size), f"position (key {key} holds no integers)"
            if len(ids) != size:
                raise ConfigError(
                    f"the batch's {key!r} holds {len(ids)} ids for a batch of {size} samples; "
                    f"it must hold one integer id per sample (or rename the key if it is not an id)."
                )
            return ids, f"key:{key}"
    return _positions(start, size), "position"


@dataclass
class StreamCursor:
    """Where one epoch of a stream is: batches and samples handed out (or dropped) so far.

    Attributes:
        batches: batches of the epoch read so far, dropped ones included.
        samples: samples of those batches: the position id of the next sample.
    """

    batches: int = 0
    samples: int = 0


def iterate_stream(
    batches: Iterable[Any],
    *,
    skip: int = 0,
    start: int | None = 0,
    sample_ids: SampleIds | None = None,
    cursor: StreamCursor | None = None,
) -> Iterator[tuple[np.ndarray, Any]]:
    """Yield ``(sample_ids, batch)`` for the batches of one epoch of a stream.

    Args:
        batches: the loader (or an iterator of its batches).
        skip: batches to read and drop first (a stateless resume).
        start: the position of the first batch read; ``None`` is 0.
        sample_ids: the user's ``batch -> ids`` function, if any.
        cursor: updated as batches are read (after each batch is handed out,
            the cursor counts it); its ``batches`` is not reset, so a caller
            resuming from a saved state sets it to the batches already trained.

    Yields:
        ids as :func:`batch_sample_ids` decides them, positions counting the
        dropped batches too, and the batch.

    Example:
        >>> [ids.tolist() for ids, _ in iterate_stream([torch.zeros(2), torch.zeros(2), torch.zeros(1)], skip=1)]
        [[2, 3], [4]]
    """
    cursor = StreamCursor() if cursor is None else cursor
    cursor.samples = 0 if start is None else int(start)
    for number, batch in enumerate(batches):
        size = batch_size_of(batch)
        position = cursor.samples
        cursor.batches += 1
        cursor.samples += size
        if number >= skip:
            ids, _ = batch_sample_ids(batch, start=position, sample_ids=sample_ids, size=size)
            yield ids, batch


def loader_state(loader: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The loader's own state, ready for a checkpoint, and a note when it is left out.

    Args:
        loader: the user's loader.

    Returns:
        ``(state, note)``: ``state`` is ``loader.state_dict()`` when the loader
        is stateful and every value in it can be stored (tensors, numpy arrays,
        numbers, strings, ``None``, lists, tuples and dicts of them), else
        ``None``; ``note`` says why a stateful loader's state was left out
        (``None`` otherwise). A stateless loader gives ``(None, None)``.

    Example:
        >>> loader_state(DataLoader(torch.utils.data.TensorDataset(torch.zeros(2))))
        (None, None)
    """
    if not is_stateful(loader):
        return None, None
    try:
        state = loader.state_dict()
    except Exception as exc:  # a loader whose state cannot be taken now
        return None, f"{type(loader).__name__}.state_dict() failed ({type(exc).__name__}: {exc})"
    if not isinstance(state, Mapping):
        return None, f"{type(loader).__name__}.state_dict() returned a {type(state).__name__}, not a dict"
    try:
        flatten({"loader": state})
    except ConfigError as exc:
        return None, f"{type(loader).__name__}'s state cannot be stored in a checkpoint: {exc}"
    return dict(state), None


def stream_position(loader: Any, *, batches: int, samples: int) -> dict[str, Any]:
    """What a checkpoint keeps of a stream's position in the current epoch.

    Args:
        loader: the user's loader.
        batches: batches of the epoch already trained.
        samples: samples of the epoch already trained (the next position id).

    Returns:
        ``{"batches": int, "samples": int, "loader": state or None, "note": str or None}``,
        storable by the checkpoint writer as it is.
    """
    state, note = loader_state(loader)
    return {"batches": int(batches), "samples": int(samples), "loader": state, "note": note}


@dataclass(frozen=True)
class StreamResume:
    """How one epoch of a stream resumes (see :func:`plan_resume`).

    Attributes:
        restored: the loader loaded its saved state (nothing to drop).
        skip: batches to read and drop first.
        start: the position id of the first batch read (``None``: 0).
        message: one line saying how the stream resumes; ``None`` when there was nothing to resume.
    """

    restored: bool
    skip: int
    start: int | None
    message: str | None


def plan_resume(loader: Any, saved: Mapping[str, Any] | None, *, batches_seen: int) -> StreamResume:
    """Decide how a stream resumes, and load the loader's state when it has one.

    Args:
        loader: the user's loader, about to be iterated for the resumed epoch.
        saved: the checkpoint's :func:`stream_position` (``None`` for older
            checkpoints or when none was saved).
        batches_seen: batches of the epoch already trained (the checkpoint's batch).

    Returns:
        A :class:`StreamResume`. A stateful loader with a saved state loads it
        (``loader.load_state_dict``) and skips nothing; any other case skips
        ``batches_seen`` batches.

    Raises:
        ConfigError: the loader refused the saved state (another dataset or loader
            than the checkpoint's); the message says so.
    """
    batches_seen = int(batches_seen)
    state = saved.get("loader") if saved else None
    samples = saved.get("samples") if saved else None
    if state is not None and is_stateful(loader) and samples is not None:
        try:
            loader.load_state_dict(state)
        except Exception as exc:
            raise ConfigError(
                f"the train loader ({type(loader).__name__}) could not load the state saved in the checkpoint: "
                f"{type(exc).__name__}: {exc}. Resume with the loader and dataset the checkpoint was saved with"
            ) from exc
        message = None
        if batches_seen:
            message = (
                f"resuming the stream at batch {batches_seen} of the epoch from {type(loader).__name__}'s "
                "saved state (no batch is read twice)"
            )
        return StreamResume(restored=True, skip=0, start=int(samples), message=message)
    if not batches_seen:
        return StreamResume(restored=False, skip=0, start=None, message=None)
    why = saved.get("note") if saved else None
    if why is None:
        why = (
            "the loader has no state_dict/load_state_dict"
            if not is_stateful(loader)
            else "the checkpoint holds no state of this loader"
        )
    message = (
        f"resuming the stream by reading and dropping the {batches_seen} batches of the epoch already "
        f"trained ({why}; a torchdata StatefulDataLoader resumes without re-reading)"
    )
    return StreamResume(restored=False, skip=batches_seen, start=None, message=message)


def restore_loader(
    loader: Any, saved: Mapping[str, Any] | None, *, batches_seen: int, sample_ids: SampleIds | None = None
) -> tuple[Iterator[tuple[np.ndarray, Any]], str | None]:
    """Resume an epoch of a stream: the remaining ``(sample_ids, batch)`` pairs and one line saying how.

    Args:
        loader: the user's loader.
        saved: the checkpoint's :func:`stream_position`, or ``None``.
        batches_seen: batches of the epoch already trained.
        sample_ids: the user's ``batch -> ids`` function, if any.

    Returns:
        ``(pairs, message)``: an iterator over the batches not yet trained, with
        the ids they had in the uninterrupted epoch (positions continue from
        where the checkpoint was), and :attr:`StreamResume.message`.

    Raises:
        ConfigError: as for :func:`plan_resume`.

    Example:
        >>> pairs, message = restore_loader(loader, ck.sampler["stream"], batches_seen=3)  # doctest: +SKIP
    """
    plan = plan_resume(loader, saved, batches_seen=batches_seen)
    return iterate_stream(loader, skip=plan.skip, start=plan.start, sample_ids=sample_ids), plan.message


def _positions(start: int, size: int) -> np.ndarray:
    return np.arange(start, start + size, dtype=np.int64)


def _as_ids(value: Any) -> np.ndarray | None:
    """One-dimensional int64 ids from a tensor, array or sequence of integers; None otherwise."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            return None
        return value.detach().cpu().reshape(-1).numpy().astype(np.int64, copy=False)
    try:
        array = np.asarray(value)
    except Exception:
        return None
    if array.dtype.kind not in "iu" or array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
        return None
    return array.reshape(-1).astype(np.int64, copy=False)


def _describe_ids(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"

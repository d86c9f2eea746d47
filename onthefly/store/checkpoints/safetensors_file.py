"""The checkpoint file: one safetensors file, written atomically, read and verified.

This is the byte layer under :mod:`onthefly.store.checkpoints.checkpoints`, which turns
training state into tensors and a JSON skeleton (see :mod:`onthefly.store.checkpoints.tree`)
and back. Here the tensors are laid out as a safetensors file whose metadata
carries the format tag, the format version and the skeleton. The file is
written to a temporary name in the same folder, fsynced, renamed over the
final name and followed by an fsync of the folder; its sha256 is computed on
a helper thread while the same bytes are written or read. Reading checks the
header (format, version, tensor spans tiling the data exactly) before it
reads the tensor data. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from onthefly.errors import (
    ChecksumError,
    ConfigError,
    CorruptFileError,
    MissingFileError,
    StoreError,
)
from onthefly.store.durable import fsync_folder

__all__ = [
    "FORMAT_VERSION",
    "PARTIAL_SUFFIX",
    "checkpoint_chunks",
    "write_chunks",
    "read_checkpoint_file",
]

FORMAT_VERSION = 1
"""Version of the checkpoint layout this module writes and the newest it reads."""

PARTIAL_SUFFIX = ".partial"
"""Suffix of the temporary file a save writes before renaming it."""

_FORMAT = "onthefly.checkpoint"
_META_FORMAT = "onthefly.format"
_META_VERSION = "onthefly.format_version"
_META_SKELETON = "onthefly.skeleton"
_MAX_HEADER = 100_000_000  # safetensors readers refuse larger headers
_READ_CHUNK = 16 << 20  # read size while hashing on the side

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def checkpoint_chunks(*, skeleton: Any, tensors: Mapping[str, torch.Tensor], copy: bool = False) -> list[Any]:
    """The bytes of a checkpoint file, in order: the header, then each tensor's memory.

    With ``copy``, every tensor is copied first, so the chunks stay the same
    while training goes on changing the live state (a save finished on
    another thread); without, CPU tensors that are already contiguous are
    referenced as they are.

    Args:
        skeleton: the JSON skeleton of the state (see :func:`onthefly.store.checkpoints.tree.flatten`).
        tensors: the tensors the skeleton refers to, by key.
        copy: copy every tensor (see above).

    Raises:
        ConfigError: a tensor's dtype cannot be stored in safetensors.
    """
    metadata = {
        _META_FORMAT: _FORMAT,
        _META_VERSION: str(FORMAT_VERSION),
        _META_SKELETON: json.dumps(skeleton, separators=(",", ":"), allow_nan=False),
    }
    header, buffers = _layout(tensors, metadata, copy=copy)
    return [header, *buffers]


def write_chunks(path: Path, chunks: list[Any]) -> tuple[int, str]:
    """Write :func:`checkpoint_chunks` to ``path`` atomically.

    Args:
        path: the file to write (its folder is created); an existing file is
            replaced atomically.
        chunks: what :func:`checkpoint_chunks` returned.

    Returns:
        ``(bytes, sha256)``: the file size and the hex sha256 of its bytes.

    Raises:
        StoreError: the file could not be written (disk full, permissions).

    Example:
        >>> size, sha = write_chunks(tmp / "ck.safetensors", checkpoint_chunks(skeleton=skeleton, tensors=tensors))
    """
    return _write_atomic(path, chunks)


def read_checkpoint_file(path: Path, *, sha256: str | None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Read and verify a checkpoint file :func:`write_chunks` wrote.

    Args:
        path: the checkpoint file.
        sha256: the hex sha256 the file must have; ``None`` skips the check.

    Returns:
        ``(skeleton, tensors)``, the tensors on the CPU.

    Raises:
        MissingFileError: the file does not exist.
        StoreError: the file cannot be opened (permissions).
        CorruptFileError: the file is truncated, not an OnTheFly checkpoint,
            or written by a newer OnTheFly.
        ChecksumError: the bytes do not match ``sha256``.

    Example:
        >>> skeleton, tensors = read_checkpoint_file(tmp / "ck.safetensors", sha256=sha)
    """
    try:
        file = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise MissingFileError(
            f"checkpoint file {path} does not exist: it was moved or deleted; "
            "restore it from a backup or load another checkpoint"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot open checkpoint {path}: {exc.strerror}; check its permissions") from exc
    with file:
        try:
            skeleton, tensors = _read(file, path, sha256)
        except OSError as exc:
            raise CorruptFileError(
                f"reading checkpoint {path} failed: {exc.strerror}; check the disk and load another checkpoint"
            ) from exc
    return skeleton, tensors


def _layout(
    tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], *, copy: bool = False
) -> tuple[bytes, list[memoryview]]:
    """The safetensors header and the tensor bytes, in file order.

    Tensors are ordered by element size, largest first, so every tensor
    starts at an offset aligned to its element size.
    """
    entries = []
    for key, tensor in tensors.items():
        code = _CODES.get(tensor.dtype)
        if code is None:
            raise ConfigError(
                f"{key} has dtype {tensor.dtype}, which safetensors cannot store: convert it "
                f"(supported: {', '.join(str(d).removeprefix('torch.') for d in _CODES)})"
            )
        entries.append((key, code, tensor.detach().to("cpu", copy=copy).contiguous()))
    entries.sort(key=lambda entry: -entry[2].element_size())
    header: dict[str, Any] = {"__metadata__": metadata}
    buffers = []
    offset = 0
    for key, code, tensor in entries:
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": code, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
        if size:
            buffers.append(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # tensor data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded, buffers


def _write_atomic(path: Path, chunks: list[Any]) -> tuple[int, str]:
    """Write chunks to a temporary file, fsync, rename over ``path``, fsync the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of checkpoint {path}: {exc.strerror}; check permissions") from exc
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    hasher = _Hasher()
    size = 0
    try:
        with open(partial, "xb", buffering=0) as file:
            for chunk in chunks:
                hasher.feed(chunk)  # hashed on the side while the same bytes are written
                size += _write_all(file, chunk)
            os.fsync(file.fileno())
        digest = hasher.hexdigest()
        os.replace(partial, path)
    except BaseException as exc:
        hasher.close()
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(
                f"writing checkpoint {path} failed: {exc.strerror}; free disk space or check permissions, "
                "the previous checkpoints are intact"
            ) from exc
        raise
    fsync_folder(path.parent)
    return size, digest


def _write_all(file: Any, chunk: Any) -> int:
    view = memoryview(chunk).cast("B")
    done = 0
    while done < len(view):
        done += file.write(view[done:])
    return done


def _read(file: Any, path: Path, sha256: str | None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Parse, read and verify an open checkpoint file: ``(skeleton, tensors)``."""
    size = os.fstat(file.fileno()).st_size
    if size < 8:
        raise CorruptFileError(
            f"checkpoint {path} is {size} bytes, too short for a safetensors file; "
            "it was cut short, load another checkpoint"
        )
    prefix = _read_exact(file, 8, path)
    (header_size,) = struct.unpack("<Q", prefix)
    if header_size > min(size - 8, _MAX_HEADER):
        raise CorruptFileError(
            f"checkpoint {path} announces a {header_size}-byte header but holds {size} bytes: "
            "it was cut short or is not a safetensors file; load another checkpoint"
        )
    header = _read_exact(file, header_size, path)
    skeleton, entries = _parse_header(header, data_size=size - 8 - header_size, source=str(path))
    hasher = _Hasher() if sha256 is not None else None
    tensors = {}
    try:
        if hasher:
            hasher.feed(prefix)
            hasher.feed(header)
        for key, dtype, shape in entries:
            tensor = torch.empty(shape, dtype=dtype)
            if tensor.numel():
                _read_into(file, memoryview(tensor.reshape(-1).view(torch.uint8).numpy()), path, hasher)
            tensors[key] = tensor
        digest = hasher.hexdigest() if hasher else None
    finally:
        if hasher:
            hasher.close()
    if sha256 is not None and digest != sha256.lower():
        raise ChecksumError(
            f"checkpoint {path} does not match the sha256 recorded when it was saved "
            f"(expected {sha256}, found {digest}): the file changed on disk; load another checkpoint"
        )
    return skeleton, tensors


def _parse_header(
    header: bytes, *, data_size: int, source: str
) -> tuple[Any, list[tuple[str, torch.dtype, list[int]]]]:
    """Check the safetensors header of an OnTheFly checkpoint.

    Returns:
        ``(skeleton, entries)`` with ``entries`` as ``(key, dtype, shape)``
        in file order.
    """
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _corrupt(source, "has an unreadable header (not safetensors, or damaged)") from None
    if not isinstance(parsed, dict):
        raise _corrupt(source, "has a header that is not a JSON object")
    skeleton = _check_metadata(parsed.pop("__metadata__", None), source)
    return skeleton, _check_spans(parsed, data_size, source)


def _corrupt(source: str, what: str) -> CorruptFileError:
    return CorruptFileError(f"checkpoint {source} {what}; load another checkpoint")


def _check_metadata(metadata: Any, source: str) -> Any:
    """The skeleton, once the metadata says this is a checkpoint of a format we read."""
    if not isinstance(metadata, dict) or metadata.get(_META_FORMAT) != _FORMAT:
        raise CorruptFileError(
            f"{source} is a safetensors file but not an OnTheFly checkpoint (no {_META_FORMAT} metadata); "
            "read it with safetensors.torch.load_file instead"
        )
    version = str(metadata.get(_META_VERSION, ""))
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise _corrupt(source, f"has an unreadable format version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise CorruptFileError(
            f"checkpoint {source} has format version {version}, newer than this OnTheFly reads "
            f"(up to {FORMAT_VERSION}): upgrade with `pip install -U onthefly-ai`"
        )
    try:
        return json.loads(str(metadata.get(_META_SKELETON, "")))
    except json.JSONDecodeError:
        raise _corrupt(source, "has an unreadable state skeleton") from None


def _check_spans(entries: dict[str, Any], data_size: int, source: str) -> list[tuple[str, torch.dtype, list[int]]]:
    """Tensor entries in file order, once they tile the data exactly."""
    spans = []
    for key, entry in entries.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(source, f"has a malformed header entry for {key!r}") from None
        numel = 1
        for dim in shape:
            numel *= dim
        if min(shape, default=0) < 0 or end - start != numel * dtype.itemsize:
            raise _corrupt(source, f"has a header entry for {key!r} whose size does not match its shape")
        spans.append((start, end, key, dtype, shape))
    spans.sort(key=lambda span: (span[0], span[1]))
    expected = 0
    for start, end, key, _, _ in spans:
        if start != expected:
            raise _corrupt(source, f"has a gap or overlap before tensor {key!r}")
        expected = end
    if data_size < expected:
        raise CorruptFileError(
            f"checkpoint {source} is truncated: its header describes {expected} bytes of tensor data "
            f"but only {data_size} follow; the save or a copy was cut short, load another checkpoint"
        )
    if data_size > expected:
        raise _corrupt(source, f"has {data_size - expected} unexpected bytes after its last tensor")
    return [(key, dtype, shape) for _, _, key, dtype, shape in spans]


def _read_exact(file: Any, count: int, path: Path) -> bytes:
    buffer = bytearray(count)
    _read_into(file, memoryview(buffer), path, None)
    return bytes(buffer)


def _read_into(file: Any, view: memoryview, path: Path, hasher: _Hasher | None) -> None:
    done = 0
    while done < len(view):
        chunk = view[done : done + _READ_CHUNK]
        got = 0
        while got < len(chunk):
            n = file.readinto(chunk[got:])
            if not n:
                raise CorruptFileError(
                    f"checkpoint {path} ended early while reading (it shrank or was cut short); load another checkpoint"
                )
            got += n
        if hasher:
            hasher.feed(chunk)
        done += got


class _Hasher:
    """sha256 of buffers fed in order, computed on a helper thread.

    hashlib releases the GIL on large buffers, so hashing overlaps the file
    I/O of the calling thread. Buffers must not change until the digest is
    taken.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sha = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="onthefly-sha256", daemon=True)
        self._thread.start()

    def feed(self, buffer: Any) -> None:
        self._queue.put(buffer)

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (buffer := self._queue.get()) is not None:
            self._sha.update(buffer)

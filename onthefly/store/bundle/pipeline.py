"""Writing staged files into a bundle zip: each file read once, both cores busy.

:func:`write_zip` reads each file in pieces; this thread writes a piece to
the zip (:class:`~onthefly.store.bundle.zip_writer.ZipWriter`) while one helper
thread adds it to the file's CRC-32 and another to its sha256 (zlib and
hashlib release the GIL on large buffers), and a third starts the disk
write-back every :data:`FLUSH_EVERY` bytes so the final fsync finds little
left to do. A file whose sha256 is already known (a checkpoint's, recorded
when it was saved) is not hashed again: hashing is most of an export's CPU
time. Whether a file is deflated is decided on a sample of it
(:func:`~onthefly.store.bundle.checks.choose_compression`).
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from onthefly.errors import StoreError
from onthefly.store.bundle.checks import choose_compression, sample_offsets
from onthefly.store.bundle.zip_writer import ZipWriter

__all__ = ["write_zip", "WRITE_CHUNK", "PIPELINE_BUFFERS", "FLUSH_EVERY"]

WRITE_CHUNK = 2 << 20
"""Bytes read and handed to the zip writer at a time: small enough that the two
hashing threads find a piece still in the CPU cache (larger pieces measured slower)."""

PIPELINE_BUFFERS = 3
"""Pieces in flight between reading, hashing and writing."""

FLUSH_EVERY = 64 << 20
"""Bytes written between two starts of the disk write-back."""


def write_zip(
    sources: Sequence[tuple[Path, str, str | None]],
    path: Path,
    *,
    manifest_name: str,
    manifest: Callable[[dict[str, str]], bytes],
    progress: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Write ``sources`` and then a manifest into a new zip at ``path``, fsynced.

    Args:
        sources: ``(file, name in the zip, sha256)`` in the order to write
            them; a known sha256 (a checkpoint's, recorded when it was saved)
            is taken as is, None has it computed from the bytes.
        path: the zip to create (it must not exist).
        manifest_name: the name of the last entry.
        manifest: called with name -> hex sha256 of every source once they
            are written; returns the manifest's bytes (deflated). It may raise
            to abandon the zip.
        progress: called with the number of bytes read after each piece.

    Returns:
        name -> hex sha256 of every source.

    Raises:
        StoreError: a file changed size while it was read.
        OSError: reading or writing failed.

    Example:
        >>> write_zip([(Path("a.parquet"), "samples/r/a.parquet", None)], Path("x.zip"),
        ...           manifest_name="manifest.json", manifest=lambda d: b"{}")  # doctest: +SKIP
    """
    with open(path, "xb", buffering=0) as raw:
        writer = ZipWriter(raw)
        with _Pipeline(raw) as pipeline:
            digests = {name: pipeline.add(writer, source, name, known, progress) for source, name, known in sources}
        data = manifest(digests)
        entry = writer.begin(manifest_name, size=len(data), mtime=time.time(), deflate=True)
        writer.write(entry, data)
        writer.end(entry, crc=zlib.crc32(data))
        writer.close()
        os.fsync(raw.fileno())
    return digests


class _Crc:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview) -> None:
        self.value = zlib.crc32(data, self.value)


class _Pipeline:
    """The reader, the two hashing helpers and the write-back helper of one zip.

    A buffer is reused only once both hashing helpers are done with it.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._sha = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onthefly-bundle-sha256")
        self._crc = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onthefly-bundle-crc32")
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onthefly-bundle-flush")
        self._buffers = [bytearray(WRITE_CHUNK) for _ in range(PIPELINE_BUFFERS)]
        self._pending: list[tuple[Future[None], ...]] = [()] * PIPELINE_BUFFERS
        self._unflushed = 0
        self._flushing: Future[None] | None = None

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in (self._sha, self._crc, self._flusher):
            pool.shutdown(wait=True, cancel_futures=True)
        if self._flushing is not None and exc[0] is None:
            self._flushing.result()

    def add(
        self,
        writer: ZipWriter,
        source: Path,
        name: str,
        known: str | None,
        progress: Callable[[int], None] | None,
    ) -> str:
        """Add ``source`` to the zip as ``name``; returns its sha256 (``known``, or computed)."""
        sha, crc = (None if known else hashlib.sha256()), _Crc()
        with open(source, "rb", buffering=0) as f:
            facts = os.fstat(f.fileno())
            size = facts.st_size
            deflate = choose_compression(_sample(f, size), size=size)
            entry = writer.begin(name, size=size, mtime=facts.st_mtime, deflate=deflate)
            done, slot = 0, 0
            while True:
                self._settle(slot)  # both helpers are done with this buffer
                count = f.readinto(self._buffers[slot])
                if not count:
                    break
                done += count
                piece = memoryview(self._buffers[slot])[:count]
                jobs = [self._crc.submit(crc.update, piece)]
                if sha is not None:
                    jobs.append(self._sha.submit(sha.update, piece))
                self._pending[slot] = tuple(jobs)
                writer.write(entry, piece)
                self._written(count)
                if progress is not None:
                    progress(count)
                slot = (slot + 1) % PIPELINE_BUFFERS
        for slot in range(PIPELINE_BUFFERS):
            self._settle(slot)
        if done != size:
            raise StoreError(f"{source} changed size while it was exported ({size} then {done} bytes): export again")
        writer.end(entry, crc=crc.value)
        return known if sha is None else sha.hexdigest()

    def _settle(self, slot: int) -> None:
        pending, self._pending[slot] = self._pending[slot], ()
        for future in pending:
            future.result()

    def _written(self, count: int) -> None:
        self._unflushed += count
        if self._unflushed < FLUSH_EVERY or (self._flushing is not None and not self._flushing.done()):
            return
        if self._flushing is not None:
            self._flushing.result()  # raises a write-back error here
        self._flushing = self._flusher.submit(_sync_data, self._raw.fileno())
        self._unflushed = 0


def _sync_data(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def _sample(f: Any, size: int) -> bytes:
    """Pieces spread over the file, for the compression decision (the file is left at its start)."""
    pieces = []
    for offset, length in sample_offsets(size):
        f.seek(offset)
        pieces.append(f.read(length))
    f.seek(0)
    return b"".join(pieces)

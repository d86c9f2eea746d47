"""A zip writer for bundles: stored or deflated entries of known size, ZIP64 when needed.

Python's ``zipfile`` computes each entry's CRC-32 on the thread that writes
it. Bundle export reads every file once and lets helper threads compute the
CRC-32 and the sha256 of each piece while this thread writes it, so it needs a
writer that takes the CRC at the end of an entry: :class:`ZipWriter` writes a
local header with a placeholder, the data, then puts the CRC (and, for a
deflated entry, the compressed size) into the header in place. The result is
a plain zip (PKWARE APPNOTE 6.3): ``zipfile``, ``unzip`` and every zip tool
read it; no data descriptors, no encryption, UTF-8 flag never needed (bundle
names are ASCII).
"""

from __future__ import annotations

import stat
import struct
import time
import zlib
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["ZipWriter", "ZipEntry", "ZIP64_LIMIT"]

ZIP64_LIMIT = 0xFFFFFFFF
"""Sizes and offsets from this value on need ZIP64 fields."""

_MAX_ENTRIES = 0xFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # signature ... extra length: 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_END = struct.Struct("<IHHHHIIH")  # 22 bytes
_END64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")  # 20 bytes
_CRC_AT = 14  # offset of crc, compressed size, uncompressed size in a local header
_STORED, _DEFLATED = 0, 8
_MADE_BY = (3 << 8) | 45  # Unix, spec 4.5
_NEEDS_DEFLATE, _NEEDS_ZIP64 = 20, 45
_FILE_MODE = (stat.S_IFREG | 0o644) << 16


def _dos_time(timestamp: float) -> tuple[int, int]:
    year, month, day, hour, minute, second = time.localtime(max(timestamp, 315532800.0))[:6]
    year = min(max(year, 1980), 2107)
    return (hour << 11) | (minute << 5) | (second // 2), ((year - 1980) << 9) | (month << 5) | day


@dataclass
class ZipEntry:
    """An entry being written: where its header is and what it holds so far."""

    name: bytes
    size: int  # uncompressed, declared up front
    deflate: bool
    zip64: bool
    offset: int  # of the local header
    dos_time: int
    dos_date: int
    written: int = 0  # bytes written after the header
    crc: int = 0
    compressor: object = None


class ZipWriter:
    """Writes a zip file entry by entry to an open, seekable binary file.

    Args:
        file: a binary file opened for writing at offset 0 (unbuffered is
            best: ``open(path, "xb", buffering=0)``); it is not closed here.
        force_zip64: write ZIP64 fields for every entry (for tests).

    Example:
        >>> writer = ZipWriter(open("a.zip", "xb", buffering=0))
        >>> entry = writer.begin("a.txt", size=5, mtime=time.time(), deflate=False)
        >>> writer.write(entry, b"hello")
        >>> writer.end(entry, crc=zlib.crc32(b"hello"))
        >>> writer.close()
    """

    def __init__(self, file: BinaryIO, *, force_zip64: bool = False) -> None:
        self._file = file
        self._force_zip64 = force_zip64
        self._offset = 0
        self._entries: list[tuple[ZipEntry, int]] = []  # entry, compressed size
        self._open: ZipEntry | None = None

    def begin(self, name: str, *, size: int, mtime: float, deflate: bool) -> ZipEntry:
        """Start an entry of ``size`` bytes; its data follows through :meth:`write`."""
        if self._open is not None:
            raise RuntimeError(f"entry {self._open.name!r} is still open: end it first")
        encoded = name.encode("ascii")
        zip64 = self._force_zip64 or size * 1.05 >= ZIP64_LIMIT
        dos_time, dos_date = _dos_time(mtime)
        entry = ZipEntry(encoded, size, deflate, zip64, self._offset, dos_time, dos_date)
        if deflate:
            entry.compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        extra = struct.pack("<HHQQ", 1, 16, size, 0) if zip64 else b""
        header = _LOCAL.pack(
            0x04034B50,
            _NEEDS_ZIP64 if zip64 else _NEEDS_DEFLATE,
            0,
            _DEFLATED if deflate else _STORED,
            dos_time,
            dos_date,
            0,
            ZIP64_LIMIT if zip64 else 0,
            ZIP64_LIMIT if zip64 else size,
            len(encoded),
            len(extra),
        )
        self._put(header + encoded + extra)
        self._open = entry
        return entry

    def write(self, entry: ZipEntry, data: bytes | memoryview) -> None:
        """Append data to the open entry (compressed when it is deflated)."""
        if entry.compressor is not None:
            data = entry.compressor.compress(data)
        self._put(data)
        entry.written += len(data)

    def end(self, entry: ZipEntry, *, crc: int) -> None:
        """Close the open entry: its CRC-32 (computed by the caller) and final sizes go into its header."""
        if entry.compressor is not None:
            tail = entry.compressor.flush()
            self._put(tail)
            entry.written += len(tail)
            entry.compressor = None
        packed = entry.written
        if entry.zip64:
            self._patch(entry.offset + _CRC_AT, struct.pack("<I", crc))
            self._patch(entry.offset + _LOCAL.size + len(entry.name) + 4, struct.pack("<QQ", entry.size, packed))
        else:
            if packed >= ZIP64_LIMIT:
                raise ValueError(
                    f"entry {entry.name!r} compressed to {packed} bytes, past what a non-ZIP64 header holds"
                )
            self._patch(entry.offset + _CRC_AT, struct.pack("<III", crc, packed, entry.size))
        entry.crc = crc
        self._entries.append((entry, packed))
        self._open = None

    def close(self) -> int:
        """Write the central directory and the end records; returns the file's size."""
        if self._open is not None:
            raise RuntimeError(f"entry {self._open.name!r} is still open: end it first")
        start = self._offset
        for entry, packed in self._entries:
            self._put(self._central(entry, packed))
        size = self._offset - start
        count = len(self._entries)
        if self._force_zip64 or count >= _MAX_ENTRIES or start >= ZIP64_LIMIT or size >= ZIP64_LIMIT:
            end64 = self._offset
            record = _END64.pack(0x06064B50, _END64.size - 12, _MADE_BY, _NEEDS_ZIP64, 0, 0, count, count, size, start)
            self._put(record)
            self._put(_LOCATOR64.pack(0x07064B50, 0, end64, 1))
            self._put(_END.pack(0x06054B50, 0, 0, _MAX_ENTRIES, _MAX_ENTRIES, ZIP64_LIMIT, ZIP64_LIMIT, 0))
        else:
            self._put(_END.pack(0x06054B50, 0, 0, count, count, size, start, 0))
        return self._offset

    def _central(self, entry: ZipEntry, packed: int) -> bytes:
        fields = []
        usize, csize, offset = entry.size, packed, entry.offset
        if entry.zip64 or usize >= ZIP64_LIMIT:
            fields.append(usize)
            usize = ZIP64_LIMIT
        if entry.zip64 or csize >= ZIP64_LIMIT:
            fields.append(csize)
            csize = ZIP64_LIMIT
        if entry.zip64 or offset >= ZIP64_LIMIT:
            fields.append(offset)
            offset = ZIP64_LIMIT
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        needs = _NEEDS_ZIP64 if fields else _NEEDS_DEFLATE
        header = _CENTRAL.pack(
            0x02014B50,
            _MADE_BY,
            needs,
            0,
            _DEFLATED if entry.deflate else _STORED,
            entry.dos_time,
            entry.dos_date,
            entry.crc,
            csize,
            usize,
            len(entry.name),
            len(extra),
            0,
            0,
            0,
            _FILE_MODE,
            offset,
        )
        return header + entry.name + extra

    def _put(self, data: bytes | memoryview) -> None:
        self._offset += self._write_all(data)

    def _patch(self, at: int, data: bytes) -> None:
        """Overwrite bytes of a header already written, then come back to the end."""
        self._file.seek(at)
        self._write_all(data)
        self._file.seek(self._offset)

    def _write_all(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += self._file.write(view[done:])
        return done

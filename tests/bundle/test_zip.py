"""The bundle zip writer makes plain zips that zipfile and unzip read, with or without ZIP64."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
import zlib

import pytest

from onthefly.store.bundle.zip_writer import ZipWriter

ENTRIES = {
    "catalog.sqlite": (bytes(5000) + b"sqlite" * 100, True),
    "samples/r/a.parquet": (os.urandom(300_000), False),
    "steps/r/empty.parquet": (b"", False),
    "manifest.json": (b'{"format": "onthefly.bundle"}', True),
}


def write(path, *, force_zip64: bool, piece: int = 65536) -> None:
    with open(path, "xb", buffering=0) as raw:
        writer = ZipWriter(raw, force_zip64=force_zip64)
        for name, (data, deflate) in ENTRIES.items():
            entry = writer.begin(name, size=len(data), mtime=1_700_000_000.0, deflate=deflate)
            for start in range(0, len(data), piece):
                writer.write(entry, data[start : start + piece])
            writer.end(entry, crc=zlib.crc32(data))
        assert writer.close() == os.fstat(raw.fileno()).st_size


@pytest.mark.parametrize("force_zip64", [False, True], ids=["plain", "zip64"])
def test_zipfile_reads_back_every_entry(tmp_path, force_zip64):
    path = tmp_path / "w.zip"
    write(path, force_zip64=force_zip64)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        for info in zf.infolist():
            data, deflate = ENTRIES[info.filename]
            assert zf.read(info) == data
            assert info.compress_type == (zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
            assert info.date_time[0] == 2023 and (info.external_attr >> 16) == 0o100644
    assert [i.filename for i in zipfile.ZipFile(path).infolist()] == list(ENTRIES)


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the unzip command is not installed here")
@pytest.mark.parametrize("force_zip64", [False, True], ids=["plain", "zip64"])
def test_unzip_tests_the_archive_clean(tmp_path, force_zip64):
    path = tmp_path / "w.zip"
    write(path, force_zip64=force_zip64)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "No errors detected" in result.stdout, result.stdout + result.stderr


def test_a_wrong_crc_is_caught_by_readers(tmp_path):
    path = tmp_path / "bad.zip"
    with open(path, "xb", buffering=0) as raw:
        writer = ZipWriter(raw)
        entry = writer.begin("samples/r/a.parquet", size=4, mtime=0.0, deflate=False)
        writer.write(entry, b"abcd")
        writer.end(entry, crc=zlib.crc32(b"abce"))
        writer.close()
    with zipfile.ZipFile(path) as zf, pytest.raises(zipfile.BadZipFile, match="CRC"):
        zf.read("samples/r/a.parquet")


def test_one_entry_at_a_time(tmp_path):
    with open(tmp_path / "x.zip", "xb", buffering=0) as raw:
        writer = ZipWriter(raw)
        writer.begin("a.json", size=0, mtime=0.0, deflate=False)
        with pytest.raises(RuntimeError, match="still open"):
            writer.begin("b.json", size=0, mtime=0.0, deflate=False)
        with pytest.raises(RuntimeError, match="still open"):
            writer.close()

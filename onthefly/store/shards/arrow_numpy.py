"""Numpy <-> Arrow conversions for the writer, made from raw buffers.

pyarrow's own conversions (``pa.array`` of a numpy array or a list,
``pa.scalar``, ``Array.to_numpy``) first ask whether pandas is installed and,
when it is, import it: about 300 modules and 0.3-0.45 s the first time. In the
writer's thread that import holds the GIL in the middle of training. The
functions here build and read fixed-width arrays from their buffers, which
never asks, and cost the same or less.

Only fixed-width numbers and booleans (and one repeated string) are handled;
anything else goes through pyarrow's converters as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "FIXED_WIDTH",
    "from_numpy",
    "from_values",
    "numpy_dtype",
    "repeated_string",
    "take",
    "to_numpy",
    "values_and_mask",
]

FIXED_WIDTH = {
    pa.bool_(): np.dtype(np.bool_),
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32),
    pa.uint64(): np.dtype(np.uint64),
    pa.float16(): np.dtype(np.float16),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}
"""Arrow types these functions convert, with the numpy dtype of each."""


def numpy_dtype(type_: pa.DataType) -> np.dtype:
    """The numpy dtype that holds values of the fixed-width Arrow type ``type_``.

    Raises:
        TypeError: ``type_`` is not a fixed-width number or boolean.

    Example:
        >>> numpy_dtype(pa.float32())
        dtype('float32')
    """
    try:
        return FIXED_WIDTH[type_]
    except KeyError:
        raise TypeError(f"{type_} is not a fixed-width number or boolean: convert it with pyarrow") from None


def from_numpy(values: np.ndarray, type_: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """An Arrow array of ``type_`` holding ``values`` (cast when needed), null where ``mask`` is true.

    Example:
        >>> from_numpy(np.array([1, 2, 3]), pa.float32(), mask=np.array([False, True, False])).to_pylist()
        [1.0, None, 3.0]
    """
    values = np.ascontiguousarray(values, dtype=numpy_dtype(type_))
    if values.ndim != 1:
        raise ValueError(f"values have shape {values.shape}: pass a 1-D array")
    n = values.shape[0]
    validity, nulls = None, 0
    if mask is not None:
        mask = np.asarray(mask, dtype=np.bool_)
        nulls = int(np.count_nonzero(mask))
        if nulls:
            validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
    data = np.packbits(values, bitorder="little") if type_ == pa.bool_() else values
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(data)], null_count=nulls)


def from_values(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow array of ``type_`` from a list of numbers, ``None`` being null.

    Raises:
        TypeError: a value is not a number (or None).

    Example:
        >>> from_values([1, None, 2.5], pa.float64()).to_pylist()
        [1.0, None, 2.5]
    """
    dtype = numpy_dtype(type_)
    if any(v is None for v in values):
        mask = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
        filled = np.array([0 if v is None else v for v in values], dtype=dtype)
        return from_numpy(filled, type_, mask)
    return from_numpy(np.array(values, dtype=dtype), type_)


def repeated_string(value: str, n: int) -> pa.Array:
    """A ``pa.string()`` array holding ``value`` ``n`` times.

    Example:
        >>> repeated_string("r1", 2).to_pylist()
        ['r1', 'r1']
    """
    encoded = value.encode()
    if len(encoded) * n >= 2**31:  # past 32-bit offsets: let pyarrow chunk it
        return pa.repeat(pa.scalar(value, pa.string()), n)
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(encoded))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(encoded * n)])


def to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of a fixed-width column without nulls, as one numpy array.

    Raises:
        ValueError: the column holds nulls (drop or fill them first).
        TypeError: the column is not a fixed-width number or boolean.

    Example:
        >>> to_numpy(pa.chunked_array([[1, 2], [3]])).tolist()
        [1, 2, 3]
    """
    values, mask = values_and_mask(column)
    if mask is not None:
        raise ValueError(f"the column holds {int(mask.sum())} nulls: drop or fill them before converting")
    return values


def values_and_mask(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """The values of a fixed-width column and its null mask (None when it has no nulls).

    Values under a null are whatever the buffer holds; read them through the mask.

    Example:
        >>> values, mask = values_and_mask(pa.chunked_array([[1.5, None], [3.0]]))
        >>> values[~mask].tolist(), mask.tolist()
        ([1.5, 3.0], [False, True, False])
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    dtype = numpy_dtype(column.type)
    values, masks, nulls = [], [], 0
    for chunk in chunks:
        n, start = len(chunk), chunk.offset
        if n == 0:
            continue
        validity, data = chunk.buffers()[:2]
        if chunk.null_count == n:  # all null: pyarrow may leave out the data buffer
            values.append(np.zeros(n, dtype=dtype))
        else:
            values.append(
                _bits(data, start, n)
                if dtype == np.bool_
                else np.frombuffer(data, dtype=dtype, count=start + n)[start:]
            )
        masks.append(~_bits(validity, start, n) if chunk.null_count else np.zeros(n, dtype=np.bool_))
        nulls += chunk.null_count
    if not values:
        return np.empty(0, dtype=dtype), None
    joined = values[0] if len(values) == 1 else np.concatenate(values)
    return joined, (np.concatenate(masks) if nulls else None)


def take(column: pa.Array | pa.ChunkedArray, order: np.ndarray) -> pa.Array:
    """The rows of a fixed-width column at positions ``order``, nulls kept.

    Example:
        >>> take(pa.array([1, None, 3]), np.array([2, 1, 0])).to_pylist()
        [3, None, 1]
    """
    values, mask = values_and_mask(column)
    return from_numpy(values[order], column.type, None if mask is None else mask[order])


def _bits(buffer: pa.Buffer, start: int, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little", count=start + n)
    return bits[start:].astype(np.bool_)

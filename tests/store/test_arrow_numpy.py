"""Buffer-level numpy <-> Arrow conversions agree with pyarrow's own ones."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onthefly.store.shards.arrow_numpy import (
    FIXED_WIDTH,
    from_numpy,
    from_values,
    numpy_dtype,
    repeated_string,
    take,
    to_numpy,
    values_and_mask,
)

TYPES = [pa.bool_(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.uint8()]


def _values(type_: pa.DataType, n: int, rng: np.random.Generator) -> np.ndarray:
    if type_ == pa.bool_():
        return rng.random(n) < 0.5
    return (rng.random(n) * 100).astype(numpy_dtype(type_))


@pytest.mark.parametrize("type_", TYPES, ids=str)
@given(n=st.integers(0, 70), seed=st.integers(0, 2**16), with_nulls=st.booleans())
@settings(max_examples=40, deadline=None)
def test_from_numpy_equals_pa_array(type_: pa.DataType, n: int, seed: int, with_nulls: bool) -> None:
    rng = np.random.default_rng(seed)
    values = _values(type_, n, rng)
    mask = rng.random(n) < 0.3 if with_nulls else None
    ours = from_numpy(values, type_, mask)
    ours.validate(full=True)
    assert ours.equals(pa.array(values, type=type_, mask=mask))


@pytest.mark.parametrize("type_", TYPES, ids=str)
@given(n=st.integers(1, 70), seed=st.integers(0, 2**16), cut=st.integers(0, 69), with_nulls=st.booleans())
@settings(max_examples=40, deadline=None)
def test_values_and_mask_read_sliced_chunked_columns(type_, n, seed, cut, with_nulls) -> None:
    rng = np.random.default_rng(seed)
    values = _values(type_, n, rng)
    mask = rng.random(n) < 0.3 if with_nulls else np.zeros(n, bool)
    whole = pa.array(values, type=type_, mask=mask)
    start = min(cut, n - 1)  # slices have a non-zero offset, bools one inside a byte
    column = pa.chunked_array([whole.slice(start), whole.slice(0, start)], type=type_)
    got, got_mask = values_and_mask(column)
    want_mask = np.concatenate([mask[start:], mask[:start]])
    want = np.concatenate([values[start:], values[:start]])
    assert (got_mask if got_mask is not None else np.zeros(n, bool)).tolist() == want_mask.tolist()
    assert got[~want_mask].tolist() == want[~want_mask].tolist()
    order = rng.permutation(n)
    assert take(column, order).equals(column.combine_chunks().take(pa.array(order)))


def test_to_numpy_refuses_nulls_and_other_types() -> None:
    assert to_numpy(pa.chunked_array([], type=pa.int64())).dtype == np.int64
    with pytest.raises(ValueError, match="1 nulls"):
        to_numpy(pa.array([1.0, None]))
    with pytest.raises(TypeError, match="convert it with pyarrow"):
        to_numpy(pa.array(["a"]))
    all_null = pa.nulls(3, pa.float32())
    assert values_and_mask(all_null)[1].tolist() == [True] * 3


def test_from_values_takes_numbers_and_none() -> None:
    assert from_values([1, None, 3], pa.int64()).equals(pa.array([1, None, 3], type=pa.int64()))
    assert from_values([], pa.float32()).equals(pa.array([], type=pa.float32()))
    with pytest.raises(ValueError):
        from_values(["x"], pa.float64())


def test_repeated_string() -> None:
    got = repeated_string("run-é", 3)
    got.validate(full=True)
    assert got.equals(pa.array(["run-é"] * 3))
    assert repeated_string("x", 0).equals(pa.array([], type=pa.string()))


def test_every_fixed_width_type_round_trips() -> None:
    rng = np.random.default_rng(0)
    for type_ in FIXED_WIDTH:
        values = _values(type_, 9, rng)
        assert to_numpy(from_numpy(values, type_)).tolist() == values.tolist()


def test_none_of_it_imports_pandas() -> None:
    code = (
        "import sys, numpy as np, pyarrow as pa\n"
        "from onthefly.store.shards import arrow_numpy as an\n"
        "a = an.from_numpy(np.arange(5), pa.int64(), np.arange(5) % 2 == 0)\n"
        "an.take(pa.chunked_array([a, a]), np.arange(10)[::-1]); an.values_and_mask(a)\n"
        "an.from_values([1.0, None], pa.float32()); an.repeated_string('r', 4)\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"

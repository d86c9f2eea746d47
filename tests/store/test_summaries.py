from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from onthefly.errors import ConfigError
from onthefly.store.shards.summaries import accuracy, summarize_losses


def test_summary_of_known_values_has_exact_statistics():
    s = summarize_losses(np.arange(1, 101, dtype=np.float32), bins=10)
    assert s["count"] == 100
    assert s["nonfinite"] == 0
    assert s["mean"] == pytest.approx(50.5)
    assert (s["min"], s["max"]) == (1.0, 100.0)
    assert s["p10"] == pytest.approx(10.9)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["hist_edges"] == pytest.approx(np.linspace(1, 100, 11).tolist())
    assert s["hist_counts"] == [10] * 10


def test_nonfinite_values_are_counted_apart_and_left_out_of_statistics():
    s = summarize_losses(np.array([np.nan, 2.0, np.inf, 4.0, -np.inf]), bins=2)
    assert s["count"] == 5
    assert s["nonfinite"] == 3
    assert s["mean"] == 3.0
    assert (s["min"], s["max"], s["p50"]) == (2.0, 4.0, 3.0)
    assert sum(s["hist_counts"]) == 2


def test_empty_input_gives_zero_count_and_no_statistics():
    s = summarize_losses(np.array([], dtype=np.float32))
    assert s["count"] == 0 and s["nonfinite"] == 0
    for key in ("mean", "min", "max", "p10", "p50", "p90", "p99"):
        assert s[key] is None
    assert s["hist_edges"] == [] and s["hist_counts"] == []


def test_all_nonfinite_input_gives_no_statistics():
    s = summarize_losses(np.array([np.nan, np.nan]))
    assert s["count"] == 2 and s["nonfinite"] == 2
    assert s["mean"] is None and s["hist_counts"] == []


def test_a_single_repeated_value_gets_a_widened_histogram_range():
    s = summarize_losses(np.full(7, 0.25), bins=4)
    edges = s["hist_edges"]
    assert len(edges) == 5
    assert edges[0] < 0.25 < edges[-1]
    assert all(a < b for a, b in zip(edges, edges[1:]))
    assert sum(s["hist_counts"]) == 7


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_bins_that_are_not_a_positive_integer_are_refused(bins):
    with pytest.raises(ConfigError, match="bins"):
        summarize_losses(np.ones(3), bins=bins)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.integers(0, 300),
        elements=st.floats(-1e6, 1e6, width=32) | st.sampled_from([np.nan, np.inf, -np.inf]),
    ),
    st.integers(1, 64),
)
def test_histogram_counts_every_finite_value_once_and_quantiles_follow_numpy(loss, bins):
    s = summarize_losses(loss, bins=bins)
    finite = loss[np.isfinite(loss)].astype(np.float64)
    assert s["count"] == loss.size
    assert s["nonfinite"] == loss.size - finite.size
    if finite.size == 0:
        assert s["p50"] is None
        return
    assert len(s["hist_edges"]) == bins + 1
    assert len(s["hist_counts"]) == bins
    assert sum(s["hist_counts"]) == finite.size
    assert s["hist_edges"][0] <= finite.min() and s["hist_edges"][-1] >= finite.max()
    assert s["p90"] == pytest.approx(float(np.quantile(finite, 0.9)))
    assert s["min"] <= s["p10"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_accuracy_is_the_fraction_of_true_values():
    assert accuracy(np.array([True, False, False, True])) == 0.5
    assert accuracy(np.array([], dtype=bool)) is None

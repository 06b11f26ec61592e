"""Merging stats of two samples equals the stats of their union (property-based)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from w4rl_core.data.stats import batch_stats, merge_stats

floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.just(3)), elements=floats),
       arrays(np.float32, st.tuples(st.integers(1, 20), st.just(3)), elements=floats))
def test_merge_equals_union(a, b):
    merged = merge_stats(batch_stats(a), batch_stats(b))
    full = batch_stats(np.concatenate([a, b]))
    assert merged["count"] == full["count"]
    for key in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(merged[key], full[key], rtol=1e-6, atol=1e-4)


def test_first_merge_is_identity():
    s = batch_stats(np.arange(6.0))
    assert merge_stats(None, s) == s and s["count"] == 6 and s["max"] == [5.0]

"""Property-based: any pair of objective weights is either a valid spec or a SpecError naming it."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec

weights = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e308]),
    st.integers(min_value=-10, max_value=10),
    st.text(max_size=5),
    st.none(),
)


def _spec(w1, w2) -> dict:
    return {
        "data": {"source": "order"},
        "objectives": [
            {
                "name": "correctness",
                "direction": "max",
                "source": "metric:prefix_accuracy",
                "term": "answer",
                "weight": w1,
                "reference": 0,
            },
            {
                "name": "length",
                "direction": "min",
                "source": "metric:length_items",
                "term": "brevity",
                "weight": w2,
                "reference": 14,
            },
        ],
    }


def _valid(w) -> bool:
    return isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0


@settings(max_examples=200, deadline=None)
@given(weights, weights)
def test_weights_are_accepted_exactly_when_finite_non_negative_and_not_all_zero(w1, w2):
    try:
        spec = RunSpec.parse(_spec(w1, w2))
    except SpecError as err:
        message = str(err)
        assert "weight" in message
        assert not (_valid(w1) and _valid(w2) and w1 + w2 > 0), message
        return
    assert _valid(w1) and _valid(w2) and w1 + w2 > 0
    assert [o.weight for o in spec.objectives] == [float(w1), float(w2)]

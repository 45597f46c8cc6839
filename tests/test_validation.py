"""Shared argument checks: the interval check accepts its interval and names what it rejects."""

import math

import pytest

from probcons.validation import check_choice, check_in_interval


def test_interval_check_accepts_the_interval_and_its_included_ends():
    assert check_in_interval(0, "x", 0, 1, include_high=False) == 0.0
    assert check_in_interval(0.5, "x", 0, 1) == 0.5
    assert check_in_interval(1, "x", 0, 1) == 1.0
    assert check_in_interval(1e300, "x", 0, math.inf, include_low=False) == 1e300


@pytest.mark.parametrize(
    "value, low, high, include_low, include_high",
    [
        (1.0, 0, 1, True, False),  # excluded upper end
        (0.0, 0, math.inf, False, False),  # excluded lower end
        (-0.1, 0, 1, True, True),
        (math.inf, 0, math.inf, False, False),  # an infinite end is never reached
        (math.nan, 0, 1, True, True),
        (True, 0, 1, True, True),  # bools are not numbers here
        ("0.5", 0, 1, True, True),
        (None, 0, 1, True, True),
    ],
)
def test_interval_check_rejects_with_the_name_interval_and_value(
    value, low, high, include_low, include_high
):
    with pytest.raises(ValueError, match=r"^rate: expected a number in [\[(].*got") as error:
        check_in_interval(value, "rate", low, high, include_low, include_high)
    assert repr(value) in str(error.value)


def test_check_choice_names_the_argument_and_the_choices():
    assert check_choice("b", "mode", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"^mode: expected one of a, b, got 'c'$"):
        check_choice("c", "mode", ("a", "b"))
    with pytest.raises(ValueError, match="mode: expected one of a, b, got None"):
        check_choice(None, "mode", ("a", "b"))

"""Counts in SI units: the one format for parameters and multiply-adds in tables and summaries."""

from archc.units import si


def test_three_significant_digits_with_a_prefix():
    assert si(8_388_608) == "8.39 M" and si(8_400_000) == "8.4 M" and si(3_857_973_248) == "3.86 G"
    assert si(269_722) == "270 k" and si(650) == "650" and si(0) == "0" and si(2.5e13) == "25 T"


def test_rounding_moves_to_the_next_prefix():
    assert si(999) == "999" and si(999_999) == "1 M" and si(999_500) == "1 M" and si(999_499) == "999 k"


def test_signs_for_deltas():
    assert si(173_824, signed=True) == "+174 k" and si(-19_267_584, signed=True) == "-19.3 M"
    assert si(0, signed=True) == "0" and si(-5) == "-5"

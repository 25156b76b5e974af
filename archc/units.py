"""Counts for people: parameters and multiply-adds in SI units ("8.39 M", "3.86 G"), the one format everywhere.

Tables print exact counts where they add up (per stage, per layer) and this short form beside totals and
deltas; JSON output keeps the exact integers.
"""

from __future__ import annotations

PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(n: float, signed: bool = False) -> str:
    """`n` to three significant digits with an SI prefix: 8_388_608 -> "8.39 M", 650 -> "650".

    Args:
        n: a count (params, multiply-adds) or a difference of two.
        signed: put "+" before a positive number (for deltas); a negative one always has "-".

    Returns:
        The number and its prefix, separated by a space ("0" for zero).
    """
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    rounded = float(f"{abs(n):.3g}")  # round first: 999,999 is "1 M", not "1e+03 k"
    for scale, prefix in PREFIXES:
        if rounded >= scale:
            return f"{sign}{rounded / scale:.3g} {prefix}"
    return f"{sign}{rounded:.3g}"

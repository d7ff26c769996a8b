"""Bounds a number must keep to be recorded: the database's INTEGER columns (and torch's seeds) hold
64-bit signed integers, so a larger priority, seed or length would fail a run mid-way."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

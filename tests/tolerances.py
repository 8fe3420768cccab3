"""Tolerances for float comparisons, in one place; every test file imports these."""

# Absolute tolerance for float64 results that should agree up to rounding.
ATOL = 1e-10
# Relative tolerance for comparisons against reference implementations (scipy, sklearn).
RTOL = 1e-7

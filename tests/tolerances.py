"""Tolerances for float comparisons, in one place; every test file imports these."""

# Absolute tolerance for float64 results that should agree up to rounding.
ATOL = 1e-10
# Relative tolerance for comparisons against reference implementations (scipy, sklearn).
RTOL = 1e-7
# How far a mean loss may move when the engine runs in bfloat16 or float16 instead of
# float32: bfloat16 keeps 8 significant bits (relative error 2^-8 ≈ 0.4 % per rounding),
# and a mean cross-entropy near ln 3 ≈ 1.1 averages those errors over the sample.
HALF_LOSS_ATOL = 1e-2
# float32 vs float32 through torch.compile: same maths, other kernels and summation order.
COMPILE_LOSS_ATOL = 1e-5
# float32 vs float32, same maths in another order (torch.lerp vs α·θA + (1−α)·θB by hand,
# per-example losses averaged in float64 vs one float64 cross-entropy).
FLOAT32_LOSS_ATOL = 1e-5

"""Pure statistics on matrices and vectors: numpy, scipy, scikit-learn; no torch, no I/O.

:mod:`~modeconn.stats.basins` (spectral basins and the basin score),
:mod:`~modeconn.stats.inference` (correlations with intervals, R²),
:mod:`~modeconn.stats.table_one` (the paper's Table 1: cluster statistics),
:mod:`~modeconn.stats.ties` (ties within float noise) and
:mod:`~modeconn.stats.uncertainty` (the bootstrap over the evaluation sample).
"""

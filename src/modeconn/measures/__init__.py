"""What a path or a point measures.

:mod:`~modeconn.measures.barriers` (barrier height, convexity gap, AUC, Euclidean distance;
pure numpy), :mod:`~modeconn.measures.task_metrics` (accuracy, F1, MCC) and
:mod:`~modeconn.measures.sharpness` (ε-sharpness by projected gradient ascent).
"""

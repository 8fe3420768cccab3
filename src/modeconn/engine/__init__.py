"""Every evaluation goes through here: one resident skeleton, points written in place.

:mod:`~modeconn.engine.spec` (the picklable :class:`EngineSpec` and ``build_engine``),
:mod:`~modeconn.engine.evaluate` (the :class:`Evaluator`, BatchNorm policy),
:mod:`~modeconn.engine.paths` (the α grid), :mod:`~modeconn.engine.sweep` (plan and run every
pair), :mod:`~modeconn.engine.backends` / :mod:`~modeconn.engine.pools` /
:mod:`~modeconn.engine.tasks` (process and Ray workers, one writer),
:mod:`~modeconn.engine.planes` (loss planes), :mod:`~modeconn.engine.planning` (cost).
"""

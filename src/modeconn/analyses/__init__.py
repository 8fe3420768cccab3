"""The analyses beyond the basins, one module each (Juneja et al. 2023 and after).

* :mod:`~modeconn.analyses.base` — what an analysis is (:class:`~modeconn.analyses.base.Analysis`)
  and what its ``measure`` sees (:class:`~modeconn.analyses.base.MeasureContext`);
* :mod:`~modeconn.analyses.registry` — the ordered list of analyses, one line each;
* :mod:`~modeconn.analyses.run` — :func:`~modeconn.analyses.run.analyze_study`, the one
  function that composes the basins (:func:`modeconn.results.analyze`) with every
  analysis the study enables;
* one module per analysis: :mod:`~modeconn.analyses.distances` (Appendix I, Fig. 21),
  :mod:`~modeconn.analyses.sharpness` (App. F.4), :mod:`~modeconn.analyses.table_one`
  (Table 1, R² and predictors), :mod:`~modeconn.analyses.uncertainty` (bootstrap over
  the sample), :mod:`~modeconn.analyses.planes` (Fig. 2),
  :mod:`~modeconn.analyses.trajectory` (Fig. 7).

Like :mod:`modeconn.results`, reading an analysis uses the store only: values that need
the weights (Euclidean distances, sharpness, loss planes, checkpoint paths) are measured
by each analysis's ``measure`` during ``modeconn run`` and kept in the store under keys
built from weight hashes, split keys and settings fingerprints.
"""

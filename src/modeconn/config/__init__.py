"""The study format: pydantic models and the YAML loader. Imports no torch.

:mod:`~modeconn.config.study` (the :class:`Study`, ``extends:``, built-in studies),
:mod:`~modeconn.config.basins` (the ``basins:`` section and ``preset: paper``),
:mod:`~modeconn.config.engine` (model, eval, sweep; the model kinds),
:mod:`~modeconn.config.splits` (split entries by kind), :mod:`~modeconn.config.train`,
:mod:`~modeconn.config.sections` (the ``analyses:`` sections, validated by each analysis) and
:mod:`~modeconn.config.yamlfile` (duplicate keys refused). Every other stage imports its
settings from here; nothing here imports a stage.
"""

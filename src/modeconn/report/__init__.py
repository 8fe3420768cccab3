"""The self-contained HTML report.

:mod:`~modeconn.report.html` (sections, escaping, embedded images),
:mod:`~modeconn.report.common` (helpers shared with the analyses) and
:mod:`~modeconn.report.study` (the core sections, then each analysis's own).
"""

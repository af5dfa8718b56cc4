"""Ground truth through the whole pipeline: the ``intermodal validate`` suites (``suites``),
the data sets and jobs they run (``experiments``), the rows they write (``rows``) and the
demo. It sits above ``pipelines`` and only ``cli`` imports it: the jobs never depend on it."""

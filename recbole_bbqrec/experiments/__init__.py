"""Experiment tools around the core pipeline: they run ``quick_start.run`` many times and turn
its result records into tables and reports. The training pipeline (``quick_start`` and
everything it imports) never imports them.

``compare`` (side-by-side tables, named sets of runs), ``tables`` (the table helpers),
``report`` (``reports/<Dataset>.md``), ``ablation`` (paper Tables 3-4), ``budget_compare``
(models at equal minutes), ``tune`` + ``search_space`` + ``sweep_results`` (Ray Tune search
and its Figure-3 plot).
"""

"""The experiment matrices as data: ``<profile>.json`` per profile and ``negative_results.json``.

``longctx.plan`` reads them; each study expands its own part (``longctx.streaming.study``,
``longctx.attribution.study``).
"""

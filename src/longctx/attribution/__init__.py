"""Study 2: token-level attribution of generated outputs, and what each method costs as contexts grow.

Where things are: ``inputs`` (what is explained), ``reference_inputs`` (the original experiment's input
construction, for ``--protocol reference``), ``method`` (the registry), ``methods/`` (one module per family, each
with its options; ``routing_reference`` is the original's IFR path), ``spans`` (what the span methods explain),
``tracing``/``routes``/``embeddings``/``sentences`` (shared machinery),
``config`` (cell and explain settings), ``cell``/``worker`` (one measured cell in a fresh process),
``metrics`` (the result's metrics), ``study`` (plan cells), ``time_curve`` and ``explain`` (the commands).
"""

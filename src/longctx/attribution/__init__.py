"""Study 2: token-level attribution of generated outputs, and what each method costs as contexts grow.

Where things are: ``inputs`` (what is explained), ``method`` (the registry), ``methods/`` (one module per
family, each with its options), ``tracing``/``routes``/``embeddings``/``sentences`` (shared machinery),
``config`` (cell and explain settings), ``cell``/``worker`` (one measured cell in a fresh process),
``metrics`` (the result's metrics), ``study`` (plan cells), ``time_curve`` and ``explain`` (the commands).
"""

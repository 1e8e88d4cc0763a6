"""Study 1: bounded KV caches for streaming decoding (recompute, Start+Recent, Lazy Pruning).

``config`` (knobs, budget arithmetic), ``policy`` (when to prune, what to keep), ``rope`` (re-rotation),
``cache`` (fast preallocated cache), ``plain_cache`` (slice-and-concatenate cache), ``evaluator`` (decode
loop), ``schedule`` + ``static_cache`` + ``compiled`` (fixed-shape ring cache, compiled decode step),
``inputs`` (text, tokens, model description) and ``cell`` (the plan/CLI entry point).
"""

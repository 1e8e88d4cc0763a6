"""The streaming cell's knobs (one dataclass) and their validation into a resolved cache budget.

Knobs (spec/streaming.md):

* ``method``: ``recompute`` (sliding-window recomputation, no cache), ``start_recent`` (StreamingLLM,
  strict: cut back to ``C_total`` after every step) or ``lazy`` (Lazy Pruning, below).
* ``n_sink`` S: the first S text tokens stay in the cache at positions ``0 … S-1``.
* ``window`` W or ``cap_total`` C_total (exactly one): with ``cap_total`` the window is auto-capped,
  ``W = C_total - S - σ - O - B`` (a UsageError when ``W < 1``); with ``window`` the total is
  ``C_total = S + W + σ + O + B``. The capacity is ``C = S + W``; prefill covers ``min(C, N)`` tokens.
  For ``recompute`` the recomputed window is ``C`` tokens (``n_sink`` of them the text's first ones).
* ``compress_every`` R (lazy only): prune when ``len - C_soft >= R`` (len counted after the forward);
  ``R = 0`` means never prune (refused when the whole stream would exceed ``max_position_embeddings``).
* ``cache_slack`` σ (lazy only): ``C_soft = C_total - σ``, the length a prune cuts back to. With
  ``σ >= R - 1`` attention never sees more than ``C_total`` entries; otherwise it sees up to ``C_soft + R``.
* ``max_drop`` δ (lazy only): when ``δ > 0`` one prune drops at most δ entries (target
  ``max(len - δ, C_soft)``, but never above ``C_total``); ``δ = 0`` means no limit.
* ``overlap`` O: widens the kept recent block to ``W + O`` (under auto-cap it also shrinks W by O, so the
  recent block is unchanged and only the prefill length moves).
* ``refresh_budget`` B with ``refresh_policy`` ``uniform`` | ``middle``: every prune re-inserts B evenly
  spaced entries of the span it drops (``uniform``: after the recent block; ``middle``: between the sinks
  and the recent block). ``refresh_policy`` must be ``none`` exactly when ``B = 0``.
* ``impl``: ``fast`` (preallocated buffer, O(S + B) head re-rotation per prune; refresh ``middle`` only) or
  ``plain`` (the original slice-and-concatenate cache); both implement the same definition.
* ``protocol``: ``efficient`` (the definition above, ``impl``'s cache) or ``reference`` (the code path that produced
  the published numbers, 3cb8e4b, quirks included: ``longctx.streaming.reference_loop``). ``reference_loss`` picks
  which of the original's two loss modes the reference protocol uses (its result files do not record it):
  ``fp32_except_baseline_prefill`` (254e749 with ``--fp32-loss``, what the seed's README describes) or
  ``model_dtype`` (3cb8e4b as committed: cross-entropy on the fp16 logits everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx.errors import UsageError
from longctx.options import option

PROTOCOLS = ("reference", "efficient")
REFERENCE_LOSSES = ("fp32_except_baseline_prefill", "model_dtype")
METHODS = ("recompute", "start_recent", "lazy")
IMPLS = ("fast", "plain")
REFRESH_POLICIES = ("none", "uniform", "middle")
LAZY_ONLY = ("compress_every", "cache_slack", "max_drop")
CACHE_ONLY = ("overlap", "refresh_budget")
BUDGET_KNOBS = (*LAZY_ONLY, *CACHE_ONLY, "n_sink", "window", "cap_total", "refresh_policy")
DEFAULT_KNOBS = {"compress_every": 1, "cache_slack": 0, "max_drop": 0, "overlap": 0, "refresh_budget": 0}


@dataclass
class StreamingEvalConfig:
    """Every knob of one streaming evaluation (a plan cell or one ``longctx streaming eval`` call)."""

    model: str = option(help="local HF dir, hub id in the offline cache, or random:<arch>")
    text_file: str = option(help="plain UTF-8 text or JSON with a 'text' field")
    method: str = option(help="cache method", choices=METHODS)
    max_eval_tokens: int = option(help="N: tokens of the text evaluated")
    n_sink: int = option(0, help="S: sink tokens kept at positions 0..S-1")
    window: int | None = option(None, help="W: recent window (C_total = S+W+σ+O+B); or give --cap-total")
    cap_total: int | None = option(None, help="C_total: auto-cap W = C_total-S-σ-O-B; or give --window")
    compress_every: int = option(1, help="R (lazy): prune when len - C_soft >= R; 0 = never")
    cache_slack: int = option(0, help="σ (lazy): C_soft = C_total - σ")
    max_drop: int = option(0, help="δ (lazy): drop at most δ per prune; 0 = no limit")
    overlap: int = option(0, help="O: widens the recent block to W + O")
    refresh_budget: int = option(0, help="B: re-insert B dropped tokens per prune")
    refresh_policy: str = option("none", help="where refreshed tokens go", choices=REFRESH_POLICIES)
    impl: str = option("fast", help="cache implementation (same definition)", choices=IMPLS)
    compile: bool = option(False, help="one torch.compile'd fixed-shape graph per decode step (fast cache)")
    dtype: str = option("float32", help="float32 | float16 | bfloat16")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    tokenizer: str | None = option(None, help="tokenizer dir (needed with random:<arch>)")
    warmup: int = option(0, help="unmeasured runs before the repeats")
    repeats: int = option(1, help="measured runs")
    save_nll: bool = option(False, help="store per-token NLL of x_1..x_{N-1} in metrics.nll")
    profile_maintenance: bool = option(False, help="time cache maintenance vs forward (syncs around each)")
    seed: int = option(0, help="seed of random:<arch> weights")
    protocol: str = option(
        "efficient", help="reference: the published numbers' code path | efficient: the definition", choices=PROTOCOLS
    )
    reference_loss: str = option(
        REFERENCE_LOSSES[0], help="reference protocol: the original's loss mode", choices=REFERENCE_LOSSES
    )


@dataclass(frozen=True)
class Budget:
    """The resolved cache arithmetic of a config (all lengths in tokens)."""

    method: str
    n_sink: int
    window: int
    cap_total: int
    cap_soft: int
    recent: int  # W + O: the recent block a prune keeps
    compress_every: int
    max_drop: int
    refresh_budget: int
    refresh_policy: str

    @property
    def capacity(self) -> int:
        """C = S + W: the prefill length (and the recompute window)."""
        return self.n_sink + self.window

    def prefill_len(self, n_tokens: int) -> int:
        return min(self.capacity, n_tokens)

    def max_attention_len(self, n_tokens: int) -> int:
        """An upper bound on the keys one decode step attends to (cache plus the new token)."""
        if self.method == "recompute":
            return min(self.capacity, n_tokens)
        if self.compress_every == 0:
            return n_tokens
        return min(self.cap_soft + self.compress_every, n_tokens)


def _check_nonnegative(cfg: StreamingEvalConfig) -> None:
    for name in ("n_sink", "window", "cap_total", *LAZY_ONLY, *CACHE_ONLY, "warmup"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise UsageError(f"{_flag(name)} must be a non-negative integer, got {value!r}")
    if cfg.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {cfg.repeats}")
    if cfg.max_eval_tokens < 2:
        raise UsageError(f"--max-eval-tokens must be at least 2 (one scored token), got {cfg.max_eval_tokens}")


def _check_choices(cfg: StreamingEvalConfig) -> None:
    for name, choices in (
        ("method", METHODS),
        ("impl", IMPLS),
        ("refresh_policy", REFRESH_POLICIES),
        ("protocol", PROTOCOLS),
        ("reference_loss", REFERENCE_LOSSES),
    ):
        if getattr(cfg, name) not in choices:
            raise UsageError(f"{_flag(name)} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
    not_for_method = LAZY_ONLY if cfg.method == "start_recent" else ()
    if cfg.method == "recompute":
        not_for_method = (*LAZY_ONLY, *CACHE_ONLY)
    for name in not_for_method:
        if getattr(cfg, name) != DEFAULT_KNOBS[name]:
            raise UsageError(f"{_flag(name)} does not apply to --method {cfg.method}")
    if (cfg.refresh_budget > 0) != (cfg.refresh_policy != "none"):
        raise UsageError("--refresh-budget > 0 needs --refresh-policy uniform|middle, and --refresh-policy needs B > 0")
    if cfg.refresh_policy == "uniform" and cfg.impl == "fast":
        raise UsageError(
            "--refresh-policy uniform needs --impl plain: refreshed tokens after the recent block shift every "
            "recent key's position, which the fast cache's O(S + B) re-rotation does not do"
        )
    if cfg.protocol == "reference":
        _check_reference(cfg)
    elif cfg.reference_loss != REFERENCE_LOSSES[0]:
        raise UsageError("--reference-loss applies to --protocol reference only")
    if cfg.compile:
        _check_compile(cfg)


def _check_reference(cfg: StreamingEvalConfig) -> None:
    """What the reference protocol (the original's code path) does not have is refused, never approximated."""
    if cfg.compile:
        raise UsageError("--compile is the efficient protocol's static cache: it cannot run --protocol reference")
    if cfg.impl != "fast":
        raise UsageError("--impl picks the efficient protocol's cache; --protocol reference has its own: leave it")
    if cfg.profile_maintenance:
        raise UsageError("--profile-maintenance syncs around cache work the original never timed: not with reference")
    if cfg.refresh_budget:
        raise UsageError("--protocol reference follows the published runs, none of which refreshed: drop --refresh-*")
    if cfg.method == "recompute" and cfg.n_sink:
        raise UsageError("the original recompute baseline keeps no sinks: --protocol reference needs --n-sink 0")


def _check_compile(cfg: StreamingEvalConfig) -> None:
    """What the compiled (static ring cache) path does not implement is refused, never silently run eagerly."""
    if cfg.method == "recompute":
        raise UsageError("--compile applies to --method start_recent and lazy (recompute keeps no cache)")
    if cfg.refresh_budget:
        raise UsageError("--compile does not support --refresh-budget/--refresh-policy (run them eagerly)")
    if cfg.impl != "fast":
        raise UsageError("--compile uses its own static ring cache: leave --impl at fast")
    if cfg.profile_maintenance:
        raise UsageError("--compile runs cache maintenance inside the step graph: --profile-maintenance cannot time it")


def resolve_budget(cfg: StreamingEvalConfig) -> Budget:
    """Validate every knob and resolve W, C_total and C_soft; bad values raise UsageError (exit 2)."""
    _check_nonnegative(cfg)
    _check_choices(cfg)
    return cache_budget(cfg.method, **{name: getattr(cfg, name) for name in BUDGET_KNOBS})


def cache_budget(
    method: str,
    *,
    n_sink: int,
    window: int | None = None,
    cap_total: int | None = None,
    compress_every: int = 1,
    cache_slack: int = 0,
    max_drop: int = 0,
    overlap: int = 0,
    refresh_budget: int = 0,
    refresh_policy: str = "none",
) -> Budget:
    """The cache arithmetic of the knobs (auto-cap with ``cap_total``, else C_total from ``window``)."""
    if (window is None) == (cap_total is None):
        raise UsageError("give exactly one of --window W and --cap-total C")
    S, sigma, O, B = n_sink, cache_slack, overlap, refresh_budget
    if cap_total is not None:
        if cap_total <= S:
            raise UsageError(f"--n-sink {S} must be smaller than --cap-total {cap_total}")
        window = cap_total - S - sigma - O - B
        if window < 1:
            raise UsageError(
                f"auto-cap leaves no recent window: W = C_total - S - σ - O - B = {cap_total} - {S} - {sigma} "
                f"- {O} - {B} = {window} < 1"
            )
    else:
        if window < 1:
            raise UsageError(f"--window must be at least 1, got {window}")
        cap_total = S + window + sigma + O + B
    return Budget(
        method=method,
        n_sink=S,
        window=window,
        cap_total=cap_total,
        cap_soft=cap_total - sigma,
        recent=window + O,
        compress_every=compress_every,
        max_drop=max_drop,
        refresh_budget=B,
        refresh_policy=refresh_policy,
    )


def check_context(budget: Budget, n_tokens: int, max_positions: int | None) -> None:
    """R = 0 keeps every token: refuse it when the stream would exceed the model's trained context."""
    if budget.method == "lazy" and budget.compress_every == 0 and max_positions and n_tokens > max_positions:
        raise UsageError(
            f"--compress-every 0 never prunes: {n_tokens} tokens exceed the model's max_position_embeddings "
            f"{max_positions}; use R >= 1 or fewer --max-eval-tokens"
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")

"""Predict an attribution time cell: the runner's method for the cell's protocol, on its inputs, on meta.

Inputs are the worker's (``attribution.cell.cell_inputs``: the original's construction for ``reference``,
exact lengths for ``efficient``) with the model's tokenizer, or the stand-in when it is not on this machine.
The model is placed like the worker's load: one GPU (``device`` cuda), or a balanced map over the ``cuda``
list or ``n_gpus``. A masked LM (ReAGent) is a meta model on the main GPU. The method's own call (no
warm-up: the worker's warm-up leaves nothing allocated that a measured repeat would not make again)
is what is measured.
"""

from __future__ import annotations

from longctx.predict.calls import ModelCalls
from longctx.predict.cells import (
    CALL_FAMILIES,
    PREDICTION_ERRORS,
    OriginalProcess,
    Prediction,
    failed,
    patched,
    prepare_run,
)
from longctx.predict.gpus import GpuSpec
from longctx.predict.stand_ins import causal_tokenizer, meta_masked_lm, mlm_tokenizer, model_spec
from longctx.study import Cell


def gpus_of(cfg, n_gpus: int | None) -> int:
    """How many GPUs the cell's model is spread over (an explicit ``n_gpus`` wins over the cell's ``cuda``)."""
    if n_gpus:
        return n_gpus
    return len(cfg.cuda.split(",")) if cfg.cuda else 1


def predict_attribution(
    cell: Cell, gpu: GpuSpec, n_gpus: int | None, rule: str, original: OriginalProcess
) -> Prediction:
    from longctx.attribution.cell import cell_inputs, load_sample
    from longctx.models import context_limit

    cfg = cell.config if not isinstance(cell.config, dict) else None
    if cfg is None:
        from longctx.attribution.config import TimeCellConfig

        cfg = TimeCellConfig(**cell.config)
    n = gpus_of(cfg, n_gpus)
    prediction = Prediction(cell.id, cell.study, dict(cell.labels), gpu.as_dict(), n, "ok")
    tokenizer, tokenizer_used = causal_tokenizer(cfg.model, cfg.tokenizer)
    spec, config_used = model_spec(cfg.model)
    inputs = cell_inputs(cfg, tokenizer, load_sample(cfg).text)
    prediction.details = {
        "protocol": cfg.protocol,
        "method": cfg.method,
        "dtype": cfg.dtype,
        "attn_implementation": cfg.attn_implementation,
        "model_config": config_used,
        "tokenizer": tokenizer_used,
        "lengths": inputs.describe(),
        "device_map_rule": rule if n > 1 else None,
    }
    limit = context_limit(spec)
    if limit is not None and inputs.total > limit:
        prediction.status = "skipped_context"
        return prediction
    run = prepare_run(
        spec,
        cfg.dtype,
        cfg.attn_implementation,
        gpu,
        n,
        rule=rule,
        trainable=original.trainable,
        entry_state=original,
    )
    prediction.details["device_map"] = _layers_per_device(run.placement.device_map)
    run.calls.longest = inputs.total
    method = cfg.spec.runner(cfg.protocol)
    try:
        with run.running(*_masked_lm_stand_in(cfg, run)):
            method(run.model, tokenizer, inputs, cfg.options)
    except PREDICTION_ERRORS as exc:
        failed(prediction, exc)
    return run.finish(prediction)


def _layers_per_device(placement: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, device in placement.items():
        if ".layers." in f".{name}" or name.split(".")[-2:-1] == ["layers"]:
            counts[device] = counts.get(device, 0) + 1
    return counts


def _masked_lm_stand_in(cfg, run) -> list:
    """ReAGent's ``load_masked_lm`` returns the meta masked LM on the main GPU (weights counted where used);
    its calls are counted and replayed like the causal LM's (``ModelCalls``, families shared across cells)."""
    spec = getattr(cfg.options, "mlm_model", None)
    if not spec:
        return []
    from longctx.attribution.methods import reagent

    model = meta_masked_lm(spec)
    calls = ModelCalls(run.sim, model, families=CALL_FAMILIES.setdefault(("mlm", spec, run.placement.main_device), {}))

    def load(_spec: str, _device: str):
        run.sim.pin([*model.parameters(), *model.buffers()], run.placement.main_device)
        tokenizer, used = mlm_tokenizer(spec)
        run.notes.append(f"masked LM: meta {type(model).__name__} of {spec}; tokenizer: {used}")
        return model, tokenizer, "predicted: architecture only"

    return [patched(reagent, "load_masked_lm", load), calls]

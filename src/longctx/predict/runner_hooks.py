"""What the plan runner (``longctx.runner``) asks the predictor.

* ``target_gpu(env)``: the GPU predictions are for: ``PREDICT_GPU`` (a name of ``gpus.GPUS``), else the
  visible GPU when it is in the table, else None (no predictions).
* ``dry_run_note(cell, gpu)``: the line ``DRY_RUN=1`` prints beside a cell: predicted peak and roofline time.
* ``skip_prediction(cell, gpu, env)``: the prediction of a cell that must not be launched (predicted not to
  fit; ``RUN_PREDICTED_OOM=1`` launches it anyway), else None; ``held_back`` is the runner's call: the cell's
  outcome ``predicted_oom`` goes in the run report (no result file is written: the next run predicts again).
* ``annotate_oom(cell, result, path, env)``: a measured OOM's result gets ``result["prediction"]``
  (``prediction_block``: the prediction, and whether it said OOM) when a target GPU is known.
"""

from __future__ import annotations

from collections.abc import Mapping

from longctx import knobs
from longctx.predict.cells import Prediction, predict_cell
from longctx.predict.gpus import GpuSpec, gpu_from_device_name, gpu_spec
from longctx.study import Cell

PREDICTED_OOM = "predicted_oom"
GB = 1e9


def target_gpu(env: Mapping[str, str]) -> GpuSpec | None:
    """``PREDICT_GPU`` when set (a bad name is a UsageError), else the visible GPU if known, else None."""
    name = knobs.text("PREDICT_GPU", None, env)
    if name:
        return gpu_spec(name)
    import torch

    if torch.cuda.is_available():
        return gpu_from_device_name(torch.cuda.get_device_name(0))
    return None


def summary(prediction: Prediction) -> str:
    """One line: peak (sum and largest GPU), roofline time, fit."""
    if prediction.peak_bytes is None:
        return f"prediction {prediction.status}: {prediction.error or 'no peak'}"
    top = max(prediction.peak_bytes_by_device.values(), default=0)
    fit = "fits" if prediction.fits else "does NOT fit"
    return (
        f"predicted peak {prediction.peak_bytes / GB:.1f} GB (largest GPU {top / GB:.1f} GB), roofline "
        f"{prediction.roofline_s:.3g} s, {fit} on {prediction.gpu['name']}"
    )


def dry_run_note(cell: Cell, gpu: GpuSpec) -> str:
    return summary(predict_cell(cell, gpu))


def skip_prediction(cell: Cell, gpu: GpuSpec | None, env: Mapping[str, str]) -> Prediction | None:
    """The prediction when the cell is predicted not to fit and ``RUN_PREDICTED_OOM`` is off; else None."""
    if gpu is None or knobs.flag("RUN_PREDICTED_OOM", False, env):
        return None
    prediction = predict_cell(cell, gpu)
    return prediction if prediction.status == "oom" else None


def held_back(cell: Cell, gpu: GpuSpec | None, env: Mapping[str, str], report) -> bool:
    """Whether the runner must not launch ``cell`` (predicted not to fit); if so its outcome goes in ``report``."""
    from longctx.executors.cells import Outcome

    prediction = skip_prediction(cell, gpu, env)
    if prediction is None:
        return False
    report.add(Outcome(cell.id, PREDICTED_OOM, f"{summary(prediction)} (RUN_PREDICTED_OOM=1 runs it)"))
    print(f"not launched {cell.id}: {summary(prediction)} (RUN_PREDICTED_OOM=1 runs it)", flush=True)
    return True


def prediction_block(prediction: Prediction, measured_status: str, measured_peak_bytes: int | None) -> dict:
    """The prediction beside a measurement; for a measured OOM, whether the prediction said so."""
    block = {"predicted": prediction.as_dict(), "measured_status": measured_status}
    if measured_peak_bytes is not None and prediction.peak_bytes:
        block["peak_ratio_measured_to_predicted"] = measured_peak_bytes / prediction.peak_bytes
    if measured_status.startswith("oom"):
        block["oom_predicted"] = prediction.status == "oom"
    return block


def annotate_oom(cell: Cell, result: dict, path, env: Mapping[str, str]) -> None:
    """Store the prediction beside a measured OOM (rewriting the result atomically) when a target GPU is known."""
    from longctx.results import atomic_write_json

    gpu = target_gpu(env)
    if gpu is None:
        return
    result["prediction"] = prediction_block(predict_cell(cell, gpu), str(result["status"]), None)
    atomic_write_json(path, result)

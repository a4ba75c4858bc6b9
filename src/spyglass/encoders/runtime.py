"""onnxruntime sessions on the best device available.

Speed lives in the runtime: EfficientNet-Lite0 runs about 7x faster in onnxruntime
than in eager PyTorch on the same two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spyglass.errors import ModelError
from spyglass.settings import RuntimeSettings

GraphOptimization = Literal["disabled", "basic", "extended", "all"]


@dataclass(frozen=True)
class SessionTuning:
    """onnxruntime session options that change speed, never results (beyond float
    rounding); the defaults are what ``spyglass bench ingest`` measured best on two
    cores (docs/ingest.md). ``None``: onnxruntime's own default."""

    optimization: GraphOptimization = "all"
    #: Threads one ``run`` splits its operators across (``RuntimeSettings.threads``, when
    #: set, wins).
    intra_op_threads: int | None = None
    #: Threads that run independent branches of the graph at once (parallel mode only).
    inter_op_threads: int | None = None
    #: Let idle intra-op threads spin, waiting for work, instead of sleeping.
    spinning: bool | None = None
    #: Stop that spinning as each ``run`` returns (it starts again with the next): the
    #: threads then spin only between the operators of a run, and leave the cores to
    #: what the caller does between runs (ingest decodes the next batch there).
    stop_spinning: bool = False
    #: Run independent branches of the graph at once.
    parallel: bool = False


def providers_for(settings: RuntimeSettings) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wants_cuda = settings.device in ("auto", "cuda")
    if wants_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if settings.device == "cuda":
        raise ModelError(
            "--device cuda was asked for, but onnxruntime has no CUDA provider here "
            "(install onnxruntime-gpu, or use --device cpu)"
        )
    return ["CPUExecutionProvider"]


def session_options(settings: RuntimeSettings, tuning: SessionTuning | None = None) -> Any:
    """``onnxruntime.SessionOptions`` for ``tuning`` (default: :class:`SessionTuning`)."""
    import onnxruntime as ort

    tuning = tuning or SessionTuning()
    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[tuning.optimization]
    intra = settings.threads or tuning.intra_op_threads
    if intra:
        options.intra_op_num_threads = intra
    if tuning.inter_op_threads:
        options.inter_op_num_threads = tuning.inter_op_threads
    if tuning.parallel:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if tuning.spinning is not None:
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if tuning.spinning else "0"
        )
    if tuning.stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    return options


def onnx_session(path: Path, settings: RuntimeSettings, tuning: SessionTuning | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on the chosen device."""
    import onnxruntime as ort

    options = session_options(settings, tuning)
    try:
        return ort.InferenceSession(str(path), options, providers=providers_for(settings))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"could not load ONNX model {path}: {exc}") from exc

"""Open Inference Protocol (V2) documents: model metadata and inference outputs of a served model."""

from __future__ import annotations

from typing import Any

from flywheel.errors import NotFound
from flywheel.serving.batcher import Result
from flywheel.serving.served import ServedModel

_DTYPE = {"numeric": "FP64", "categorical": "BYTES"}


def check_version(served: ServedModel, version: str | None) -> None:
    """A path naming a version must name the loaded one."""
    if version is not None and version != str(served.version):
        raise NotFound(f"{served.name} version {version} is not loaded; v{served.version} is", version=version)


def metadata(served: ServedModel) -> dict[str, Any]:
    outputs = [{"name": "predictions", "datatype": "BYTES" if served.classes else "FP64", "shape": [-1]}]
    if served.classes:
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served.classes)]})
    return {
        "name": served.name,
        "versions": [str(served.version)],
        "platform": "sklearn",
        "inputs": [{"name": f.name, "datatype": _DTYPE[f.type], "shape": [-1]} for f in served.schema.features],
        "outputs": outputs,
    }


def response(result: Result, body: Any) -> dict[str, Any]:
    """The outputs of one inference, from the version that computed it."""
    n = len(result.predictions)
    probs = result.probabilities
    dtype = "BYTES" if probs is not None else "FP64"
    outputs: list[dict[str, Any]] = [
        {"name": "predictions", "shape": [n], "datatype": dtype, "data": result.predictions}
    ]
    if probs is not None:
        flat = [v for p in probs for v in p.values()]
        outputs.append({"name": "probabilities", "shape": [n, len(probs[0]) if probs else 0], "datatype": "FP64",
                        "data": flat})  # fmt: skip
    out: dict[str, Any] = {"model_name": result.name, "model_version": str(result.version), "outputs": outputs}
    if isinstance(body, dict) and "id" in body:
        out["id"] = body["id"]
    return out

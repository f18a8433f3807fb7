"""The manifest beside every model.joblib: what was trained, on what, how it scored, how to verify it."""

from __future__ import annotations

import hashlib
import io
import math
import platform
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

from flywheel.errors import ModelVerificationError
from flywheel.schema import Schema

MANIFEST_FORMAT = 1


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
        "pandas": pd.__version__,
    }


def check_libraries(recorded: dict[str, str]) -> None:
    """A pickled Pipeline is only trusted by the same scikit-learn, Python minor and numpy major."""
    here = library_versions()
    problems = []
    if recorded.get("scikit-learn") != here["scikit-learn"]:
        problems.append(f"scikit-learn {recorded.get('scikit-learn')} != {here['scikit-learn']}")
    if recorded.get("python", "").rsplit(".", 1)[0] != here["python"].rsplit(".", 1)[0]:
        problems.append(f"python {recorded.get('python')} != {here['python']}")
    if recorded.get("numpy", "").split(".")[0] != here["numpy"].split(".")[0]:
        problems.append(f"numpy {recorded.get('numpy')} != {here['numpy']}")
    if problems:
        raise ModelVerificationError("library mismatch: " + "; ".join(problems), problems=problems)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_model(model: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    return buf.getvalue()


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records (NaN -> None)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return out


def outputs(schema: Schema, model: Any, x: pd.DataFrame) -> dict[str, Any]:
    """What the golden check compares: predictions, and class probabilities for classifiers."""
    pred = model.predict(x)
    out: dict[str, Any] = {"predictions": [p.item() if hasattr(p, "item") else p for p in pred]}
    if schema.task == "classification":
        out["probabilities"] = model.predict_proba(x).tolist()
    return out


def frame_from_records(schema: Schema, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Records (as the schema names them) -> a frame with the dtypes the Pipeline was trained on."""
    frame = pd.DataFrame.from_records(rows, columns=schema.feature_names)
    for name in schema.numeric:
        frame[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
    for name in schema.categorical:
        frame[name] = frame[name].astype(object)
    return frame


def check_golden(schema: Schema, model: Any, golden: dict[str, Any]) -> None:
    """The loaded model must reproduce the outputs recorded at training time."""
    x = frame_from_records(schema, golden["inputs"])
    got = outputs(schema, model, x)
    want = golden["outputs"]
    if schema.task == "regression":
        ok = np.allclose(got["predictions"], want["predictions"], rtol=1e-6, atol=1e-6)
    else:
        ok = got["predictions"] == want["predictions"] and np.allclose(
            got["probabilities"], want["probabilities"], rtol=1e-6, atol=1e-9
        )
    if not ok:
        raise ModelVerificationError("golden outputs differ from the manifest's", expected=want, got=got)


#: What any API client may read of a manifest: the model's identity, its inputs and how it scored. Golden rows
#: (real holdout rows), training-data statistics (rare category values), the data lineage (batch keys), the
#: gate's working and the environment stay with operators (and the UI, which reads the registry itself).
PUBLIC_FIELDS = ("model", "version", "created_at", "task", "schema", "estimator", "metrics", "sha256")


def public_view(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in PUBLIC_FIELDS if k in manifest}

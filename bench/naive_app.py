"""The comparison point: what people usually write. One FastAPI process, async, predict per request."""

from __future__ import annotations

import os
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI

app = FastAPI()
MODEL = joblib.load(os.environ["NAIVE_MODEL_PATH"])


@app.post("/predict")
async def predict(body: dict[str, Any]) -> dict[str, Any]:
    frame = pd.DataFrame.from_records(body["instances"])
    return {"predictions": MODEL.predict(frame).tolist()}

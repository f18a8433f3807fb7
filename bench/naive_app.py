"""The comparison point: what people usually write. One FastAPI process, async, predict per request."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from fastapi import FastAPI

from flywheel.registry.model_loading import open_version
from flywheel.registry.store import Registry
from flywheel.storage import s3_client

app = FastAPI()
# the bench's registry on its moto server (AWS_ENDPOINT_URL); loaded as every reader loads a model
MODEL = open_version(Registry(s3_client(), os.environ["NAIVE_BUCKET"], "savings"), int(os.environ["NAIVE_VERSION"]),
                     None).load_model()  # fmt: skip


@app.post("/predict")
async def predict(body: dict[str, Any]) -> dict[str, Any]:
    frame = pd.DataFrame.from_records(body["instances"])
    return {"predictions": MODEL.predict(frame).tolist()}

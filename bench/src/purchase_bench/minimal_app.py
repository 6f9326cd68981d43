"""The serving section's anchor: the least a FastAPI route can do with our request body.

One ``POST /predict`` that validates the same single-session body (the API's strict 13-field
``Session``, with pydantic) and answers a constant: FastAPI's and pydantic's own cost, with none
of ours (prediction, logging, limits). Issue 16 asks ours for at least 70 % of its throughput.
``uvicorn purchase_bench.minimal_app:app``, from the API's directory.
"""

from fastapi import FastAPI

from app.models import Session

app = FastAPI()


@app.post("/predict")
async def predict(session: Session) -> dict[str, bool]:
    """Validated: that is all."""
    return {"ok": True}

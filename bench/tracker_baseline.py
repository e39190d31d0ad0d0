"""The tracker benchmark's baseline: a bare FastAPI endpoint taking the same pydantic body
as ``POST /v1/conversions`` (``tracker.schemas.ConversionIn``) and answering 202 with the
same response model, with no key check and no broker. Served with the tracker's own uvicorn
options (``tracker.main.serve``) so that only the application differs.

``python -m bench.tracker_baseline PORT``
"""

from __future__ import annotations

import sys

from fastapi import FastAPI
from tracker.main import serve
from tracker.recent import WriteStatus
from tracker.schemas import ConversionIn, WriteAccepted

app = FastAPI(title="tracker baseline")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/conversions", status_code=202, response_model=WriteAccepted)
async def accept(body: ConversionIn) -> WriteAccepted:
    return WriteAccepted(status=WriteStatus.ACCEPTED)


if __name__ == "__main__":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]))

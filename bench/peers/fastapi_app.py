"""A plain FastAPI + PyTorch eager endpoint over the project's checkpoint, for bench/peer_servers.py.

    PEER_CHECKPOINT=artifacts/triage_checkpoint.npz PEER_TORCH_THREADS=1 \
        uvicorn bench.peers.fastapi_app:app --host 127.0.0.1 --port 8000

``POST /predict`` with the photo as the raw body: the project's own preprocessing (``model.preprocess.prepare``:
DCT-draft JPEG decode, letterbox, normalise, the same computation the service runs before ONNX Runtime), then
the eager network from ``model.network`` at batch 1, softmax, and the class probabilities as JSON. The endpoint
is a plain ``def``, so FastAPI runs it in its thread pool: concurrent requests overlap, since Pillow and PyTorch
release the GIL in their heavy parts. ``PEER_TORCH_THREADS`` (default 1) sets PyTorch's intra-op threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import torch
from fastapi import Body, FastAPI, HTTPException

from model.checkpoint import load_checkpoint
from model.network import build_network, load_numpy_state
from model.preprocess import prepare

torch.set_num_threads(int(os.environ.get("PEER_TORCH_THREADS", "1")))
_CHECKPOINT = load_checkpoint(Path(os.environ.get("PEER_CHECKPOINT", "artifacts/triage_checkpoint.npz")))
_SPEC = _CHECKPOINT.config.preprocessing
_NET = load_numpy_state(build_network(_CHECKPOINT.config), _CHECKPOINT.weights).eval()
app = FastAPI()


@app.post("/predict")
def predict(photo: Annotated[bytes, Body(media_type="application/octet-stream")]) -> dict[str, float]:
    try:
        prepared = prepare(photo, _SPEC)
    except (OSError, ValueError) as exc:
        raise HTTPException(400, f"unreadable photo: {exc}") from exc
    with torch.inference_mode():
        probabilities = torch.softmax(_NET(torch.from_numpy(prepared.tensor[None])), dim=1)[0].tolist()
    return dict(zip(_SPEC.classes, probabilities, strict=True))

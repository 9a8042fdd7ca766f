"""The NumPy engine's backward pass against PyTorch autograd on the shipped model: every parameter and the input.

    .venv/bin/python bench/numpy_backward.py [--photos 4] [--noise 0.01]

Loss: mean softmax cross-entropy of generated test photos (preprocessed as served) against their labels, the
network in inference form (batch-norm folded on the NumPy side, eval mode on the PyTorch side). Error of a tensor:
the largest elementwise difference divided by the reference tensor's largest magnitude. Printed for the photos as
served and with a little Gaussian noise added, in float64 and float32, with float32's own error beside it (each
float32 engine against float64 autograd): two engines round differently, and where two values of a max-pool window
are equal or within rounding of each other they can pick different maxima and route that window's gradient to
different pixels, a difference of tie-breaking, not of the backward pass. Photos as served have flat patches (one
pixel value over a letterbox band or a uniform screen area) whose windows tie exactly, so even float64 can differ
on the input gradient there; the noisy photos have no ties.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.pipeline import load_torch_model
from model.card import CHECKPOINT_NAME
from model.config import CLASSES
from model.numpy_engine import load_numpy_network
from model.preprocess import prepare
from model.synth import render_photo


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def gradients(checkpoint: Path, x: np.ndarray, labels: np.ndarray, engine: str, dtype: type) -> dict[str, np.ndarray]:
    """Loss gradients per parameter (checkpoint names) and for ``input``, from ``engine`` "numpy" or "autograd"."""
    if engine == "numpy":
        _, grads = load_numpy_network(checkpoint, dtype=dtype).loss_and_gradients(x.astype(dtype), labels)
        return {**grads.params, "input": grads.input}
    net = load_torch_model(checkpoint).to(torch.float64 if dtype is np.float64 else torch.float32)
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    torch.nn.functional.cross_entropy(net(xt), torch.tensor(labels)).backward()
    return {**{name: p.grad.numpy() for name, p in net.named_parameters()}, "input": xt.grad.numpy()}


def table(checkpoint: Path, x: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Relative errors per tensor for four pairs: ours vs autograd in each precision, and what float32 itself costs
    (each float32 engine against float64 autograd)."""
    runs = {
        (e, d): gradients(checkpoint, x, labels, e, d) for e in ("numpy", "autograd") for d in (np.float32, np.float64)
    }
    pairs = {
        "ours vs autograd, fp64": (("numpy", np.float64), ("autograd", np.float64)),
        "ours vs autograd, fp32": (("numpy", np.float32), ("autograd", np.float32)),
        "ours fp32 vs autograd fp64": (("numpy", np.float32), ("autograd", np.float64)),
        "autograd fp32 vs autograd fp64": (("autograd", np.float32), ("autograd", np.float64)),
    }
    return {label: {k: rel_err(runs[a][k], runs[b][k]) for k in runs[b]} for label, (a, b) in pairs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.01, help="std of the Gaussian noise added (normalised units)")
    args = parser.parse_args()
    checkpoint = args.artifacts / CHECKPOINT_NAME
    spec = load_numpy_network(checkpoint).config.preprocessing
    labels = np.array([i % 2 for i in range(args.photos)])
    photos = [render_photo(i, CLASSES[k], split="test").encode() for i, k in enumerate(labels)]
    x = np.stack([prepare(photo, spec).tensor for photo in photos]).astype(np.float64)
    inputs = {"as served": x, f"noise std {args.noise:g}": x + np.random.default_rng(0).normal(0, args.noise, x.shape)}
    print(f"{args.photos} generated photos, loss gradients; max |a - b| / max |b| per tensor")
    for label, batch in inputs.items():
        columns = table(checkpoint, batch, labels)
        print(f"\n#### photos {label}\n")
        print("| tensor | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
        for name in next(iter(columns.values())):
            print(f"| {name} | " + " | ".join(f"{col[name]:.1e}" for col in columns.values()) + " |")
        print("| **worst** | " + " | ".join(f"**{max(col.values()):.1e}**" for col in columns.values()) + " |")


if __name__ == "__main__":
    main()

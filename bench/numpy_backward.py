"""The NumPy engine's backward pass against PyTorch autograd on the shipped model: every parameter and the input.

    .venv/bin/python bench/numpy_backward.py [--photos 4] [--noise 0.01]

Loss: mean softmax cross-entropy of generated test photos (preprocessed as served) against their labels, the
network in inference form (batch-norm folded on the NumPy side, eval mode on the PyTorch side). Error of a tensor:
the largest elementwise difference divided by the reference tensor's largest magnitude. Printed for float32 and
float64, with and without a little Gaussian noise added to the photos: letterbox padding makes whole max-pool
windows exactly equal, where the gradient of a max is a choice (the NumPy engine routes it to the first maximum in
scan order, PyTorch to the one its kernel meets first), so the input gradient differs there without noise.
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
from model.numpy_net import NumpyTriageNet
from model.preprocess import prepare
from model.synth import render_photo


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def errors(checkpoint: Path, x: np.ndarray, labels: np.ndarray, dtype: type[np.floating]) -> dict[str, float]:
    """Relative error per parameter (checkpoint names) and for ``input``."""
    ours = NumpyTriageNet.from_checkpoint(checkpoint, dtype=dtype)
    _, grads = ours.loss_and_gradients(x.astype(dtype), labels)
    net = load_torch_model(checkpoint).to(torch.float64 if dtype is np.float64 else torch.float32)
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    torch.nn.functional.cross_entropy(net(xt), torch.tensor(labels)).backward()
    out = {name: rel_err(grads.params[name], p.grad.numpy()) for name, p in net.named_parameters()}
    out["input"] = rel_err(grads.input, xt.grad.numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.01, help="std of the Gaussian noise added (normalised units)")
    args = parser.parse_args()
    checkpoint = args.artifacts / CHECKPOINT_NAME
    spec = NumpyTriageNet.from_checkpoint(checkpoint).config.preprocessing
    labels = np.array([i % 2 for i in range(args.photos)])
    photos = [render_photo(i, CLASSES[k], split="test").encode() for i, k in enumerate(labels)]
    x = np.stack([prepare(photo, spec).tensor for photo in photos])
    noisy = x + np.random.default_rng(0).normal(0, args.noise, x.shape)
    columns = {
        "fp32, noise": errors(checkpoint, noisy, labels, np.float32),
        "fp64, noise": errors(checkpoint, noisy, labels, np.float64),
        "fp32, as served": errors(checkpoint, x, labels, np.float32),
        "fp64, as served": errors(checkpoint, x, labels, np.float64),
    }
    print(f"{args.photos} generated photos, loss gradients; max |ours - autograd| / max |autograd| per tensor\n")
    print("| tensor | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name in next(iter(columns.values())):
        print(f"| {name} | " + " | ".join(f"{col[name]:.1e}" for col in columns.values()) + " |")
    worst = {label: max(col.items(), key=lambda kv: kv[1]) for label, col in columns.items()}
    print("\nworst: " + "; ".join(f"{label}: {name} {err:.1e}" for label, (name, err) in worst.items()))


if __name__ == "__main__":
    main()

"""Scratch network against the pretrained EfficientNet-Lite0 backbone: accuracy on a short budget and serving cost.

    .venv/bin/python bench/backbone.py [--n-train 3000] [--epochs 2] [--arms scratch:256 efficientnet_lite0:224 ...]

Each arm is trained by ``model.train.train`` on the same budget of generated photos (each network with its own
preprocessing: ``model.config.preprocessing_for`` at the arm's input size), exported by ``triage export``'s own
pipeline, and measured: accuracy on the generated test and shifted splits, training seconds, multiply-accumulates
per photo, and ONNX Runtime latency on this CPU for the network alone (batch 1 and batch 8 per photo, at 1 and 2
intra-op threads) and for a whole 4032x3024 phone JPEG through the serving path (draft decode, letterbox,
normalise, 1-thread inference), medians of ``--repeat`` runs. The arms' folders are kept under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.pipeline import export_artifacts, load_torch_model
from model.card import CHECKPOINT_NAME, ONNX_NAME
from model.config import INPUT_NAME, LOGITS_NAME, NetworkConfig, Preprocessing, preprocessing_for
from model.preprocess import decode_photo, letterbox, normalize
from model.synth import render_photo
from model.train import TrainOptions, train


def multiply_accumulates(net: torch.nn.Module, size: int) -> int:
    """Multiply-accumulates of one ``(1, 3, size, size)`` forward pass, summed over convolutions and linear layers."""
    total = 0

    def count(module: torch.nn.Module, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += out.numel() * k
        elif isinstance(module, torch.nn.Linear):
            total += out.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.inference_mode():
        net.eval()(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return total


def median_ms(run: Any, repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def serving_cost(model: Path, spec: Preprocessing, repeat: int) -> dict[str, float]:
    """Milliseconds per photo: the network alone at batch 1 and 8 with 1 and 2 threads, and a phone JPEG whole."""
    out: dict[str, float] = {}
    x8 = np.random.default_rng(0).standard_normal((8, 3, spec.size, spec.size)).astype(np.float32)
    jpeg = render_photo(1, "screen_damage", split="test", size=(4032, 3024)).encode()
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        out[f"b1_t{threads}_ms"] = median_ms(lambda s=session: s.run([LOGITS_NAME], {INPUT_NAME: x8[:1]}), repeat)
        out[f"b8_t{threads}_ms"] = median_ms(lambda s=session: s.run([LOGITS_NAME], {INPUT_NAME: x8}), repeat) / 8
        if threads == 1:

            def phone(s: ort.InferenceSession = session) -> None:
                photo = decode_photo(jpeg, draft_to=spec.size, draft=spec.jpeg_draft)
                s.run([LOGITS_NAME], {INPUT_NAME: normalize(letterbox(photo, spec)[0][None], spec)})

            out["phone_t1_ms"] = median_ms(phone, repeat)
    return out


def run_arm(network: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    out = args.work / f"{network}-{size}"
    config = NetworkConfig(network=network, preprocessing=replace(preprocessing_for(network), size=size))
    opts = TrainOptions(
        out=out,
        epochs=args.epochs,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        n_shifted=args.n_val,
        cache=args.work / "cache",
        seed=args.seed,
    )
    card = train(opts, config)
    export_artifacts(out / CHECKPOINT_NAME, out)
    row = {
        "network": network,
        "size": size,
        "test": card["metrics"]["test"]["accuracy"],
        "shifted": card["metrics"]["shifted"]["accuracy"],
        "train_s": card["training"]["seconds_total"] - card["training"]["seconds_data"],
        "parameters": card["parameters"],
        "trainable": card["training"]["initialisation"]["trainable_parameters"],
        "mmacs": multiply_accumulates(load_torch_model(out / CHECKPOINT_NAME), size) / 1e6,
    }
    return row | serving_cost(out / ONNX_NAME, config.preprocessing, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arms", nargs="+", default=["scratch:256", "efficientnet_lite0:224", "efficientnet_lite0:256"]
    )
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--work", type=Path, default=Path("/tmp/backbone-bench"))
    args = parser.parse_args()
    rows = []
    for arm in args.arms:
        network, size = arm.split(":")
        rows.append(run_arm(network, int(size), args))
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{args.n_train} generated training photos x {args.epochs} epochs; test {args.n_test}, shifted {args.n_val}\n"
    )
    head = "| network | px | test | shifted | train s | MMACs | ms b1 1t | ms b1 2t | ms/photo b8 1t | ms/photo b8 2t |"
    print(head + " phone JPEG ms 1t |\n|---|---:|" + "---:|" * 9)
    for r in rows:
        cells = [f"{r['test']:.1%}", f"{r['shifted']:.1%}", f"{r['train_s']:.0f}", f"{r['mmacs']:.0f}"]
        cells += [f"{r[k]:.2f}" for k in ("b1_t1_ms", "b1_t2_ms", "b8_t1_ms", "b8_t2_ms", "phone_t1_ms")]
        print(f"| {r['network']} | {r['size']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

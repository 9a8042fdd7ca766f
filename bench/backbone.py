"""Scratch network against the pretrained EfficientNet-Lite0 backbone: accuracy on a short budget and serving cost.

    .venv/bin/python bench/backbone.py [--n-train 3000] [--epochs 2] [--arms scratch:256 efficientnet_lite0:224 ...]

Each arm is trained by ``model.train.train`` on the same budget of generated photos (each network with its own
preprocessing: ``model.config.preprocessing_for`` at the arm's input size), exported by ``triage export``'s own
pipeline, and measured: accuracy on the generated test and shifted splits, training seconds, multiply-accumulates
per photo, and ONNX Runtime cost on this CPU for the network alone (batch 1 and batch 8 per photo, at 1 and 2
intra-op threads, their pools not spinning when idle) and for a whole 4032x3024 phone JPEG through the serving path
(draft decode, letterbox, normalise, 1-thread inference): median CPU and 10th-percentile wall time of ``--repeat``
runs, the arms taking turns run by run. An int8 file beside an arm's ONNX file (``python -m export.quantize``) is
measured too. The arms' folders are kept under ``--work``; ``--cost-only`` measures them again without training.
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
from export.quantize import INT8_NAME
from model.card import CARD_NAME, CHECKPOINT_NAME, ONNX_NAME
from model.checkpoint import load_checkpoint
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


def interleaved_ms(runs: dict[str, Any], repeat: int) -> dict[str, tuple[float, float, float]]:
    """Per named run: (median wall, 10th-percentile wall, median CPU) milliseconds of ``repeat`` calls, the runs
    taking turns call by call, so a load that comes and goes on a shared CPU falls on every run alike. CPU time is
    this process's, all threads: what a photo costs a busy server. On a shared, busy CPU both are inflated; the 10th
    percentile of wall time is the closest to an idle machine."""
    for run in runs.values():
        run()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            run()
            wall[name].append(1000 * (time.perf_counter() - started))
            cpu[name].append(1000 * (time.process_time() - cpu_started))
    return {
        name: (statistics.median(wall[name]), float(np.percentile(wall[name], 10)), statistics.median(cpu[name]))
        for name in runs
    }


def serving_cost(arms: dict[str, tuple[Path, Preprocessing]], repeat: int) -> dict[str, dict[str, float]]:
    """Milliseconds per photo for each arm's ONNX file: the network alone at batch 1 and 8 (per photo) with 1 and 2
    intra-op threads, and a 4032x3024 phone JPEG whole (draft decode, letterbox, normalise, 1-thread inference)."""
    jpeg = render_photo(1, "screen_damage", split="test", size=(4032, 3024)).encode()
    runs: dict[str, Any] = {}
    for arm, (model, spec) in arms.items():
        x8 = np.random.default_rng(0).standard_normal((8, 3, spec.size, spec.size)).astype(np.float32)
        for threads in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle pools would bill the others
            session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            runs[f"{arm}|b1_t{threads}"] = lambda s=session, x=x8[:1]: s.run([LOGITS_NAME], {INPUT_NAME: x})
            runs[f"{arm}|b8_t{threads}"] = lambda s=session, x=x8: s.run([LOGITS_NAME], {INPUT_NAME: x})
            if threads == 1:

                def phone(s: ort.InferenceSession = session, spec: Preprocessing = spec) -> None:
                    photo = decode_photo(jpeg, draft_to=spec.size, draft=spec.jpeg_draft)
                    s.run([LOGITS_NAME], {INPUT_NAME: normalize(letterbox(photo, spec)[0][None], spec)})

                runs[f"{arm}|phone_t1"] = phone
    out: dict[str, dict[str, float]] = {arm: {} for arm in arms}
    for name, measured in interleaved_ms(runs, repeat).items():
        arm, what = name.split("|")
        per_photo = 8 if what.startswith("b8") else 1
        for key, value in zip(("ms", "p10_ms", "cpu_ms"), measured, strict=True):
            out[arm][f"{what}_{key}"] = value / per_photo
    return out


def run_arm(network: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    out = arm_folder(args, network, size)
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
    return row


def arm_folder(args: argparse.Namespace, network: str, size: int) -> Path:
    return args.work / f"{network}-{size}"


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
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--work", type=Path, default=Path("/tmp/backbone-bench"))
    parser.add_argument("--cost-only", action="store_true", help="measure the arms --work already holds")
    args = parser.parse_args()
    arms = [(network, int(size)) for network, size in (arm.split(":") for arm in args.arms)]
    rows = []
    for network, size in arms:
        if args.cost_only:
            rows.append(json.loads((arm_folder(args, network, size) / "bench_row.json").read_text()))
        else:
            rows.append(run_arm(network, size, args))
            (arm_folder(args, network, size) / "bench_row.json").write_text(json.dumps(rows[-1]))
        print(json.dumps(rows[-1]), flush=True)
    models = {}
    for row, (network, size) in zip(list(rows), arms, strict=True):
        folder = arm_folder(args, network, size)
        spec = load_checkpoint(folder / CHECKPOINT_NAME).config.preprocessing
        models[f"{network}:{size}"] = (folder / ONNX_NAME, spec)
        if (folder / INT8_NAME).exists():  # written by python -m export.quantize --model FOLDER/triage.onnx
            models[f"{network}:{size}:int8"] = (folder / INT8_NAME, spec)
            quantization = json.loads((folder / CARD_NAME).read_text())["quantization"]["results"]["int8"]
            rows.append(row | {"network": f"{network} int8", "test": quantization["accuracy"], "shifted": None})
    costs = serving_cost(models, args.repeat)
    for row, arm in zip(rows, sorted(models, key=lambda a: a.endswith("int8")), strict=True):
        row |= costs[arm]
        print(json.dumps(row), flush=True)
    print(
        f"\n{args.n_train} generated training photos x {args.epochs} epochs; test {args.n_test}, shifted {args.n_val}\n"
    )
    head = "| network | px | test | shifted | train s | MMACs | b1 1t ms | b1 2t ms | b8 1t ms/photo | b8 2t ms/photo |"
    print(head + " phone JPEG 1t ms |\n|---|---:|" + "---:|" * 9)
    for r in rows:
        shifted = "" if r["shifted"] is None else f"{r['shifted']:.1%}"
        cells = [f"{r['test']:.1%}", shifted, f"{r['train_s']:.0f}", f"{r['mmacs']:.0f}"]
        for k in ("b1_t1", "b1_t2", "b8_t1", "b8_t2", "phone_t1"):
            cells.append(f"{r[k + '_cpu_ms']:.2f} ({r[k + '_p10_ms']:.2f})")
        print(f"| {r['network']} | {r['size']} | " + " | ".join(cells) + " |")
    print(
        "\nms per photo: median CPU time of this process (10th percentile of wall time), arms taking turns run by run"
    )


if __name__ == "__main__":
    main()

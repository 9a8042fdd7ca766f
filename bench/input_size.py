"""Input size vs thin-crack recall and latency: the same network trained at several input sizes, same budget.

    .venv/bin/python bench/input_size.py [--sizes 128 192 256 320 384] [--n-train 3000] [--epochs 4]

For each size the default network (its preprocessing with that ``size``) is trained by ``model.train.train`` on the
same generated photos and budget, then measured on the test split: recall of screen_damage for each crack width the
generator drew (hairline, thin, thick; photos are drawn with the long side in 448..640 px and a crack's width is a
fraction of it) and the false-positive rate on general_returns at the model's own decision; since models trained at
different sizes settle on different trade-offs, also threshold-free: each width's ROC AUC against all
general_returns photos, and its recall at the threshold that passes 10% of them. Latency is for a 4032x3024 phone JPEG
through the serving path at that size: draft decode (Pillow picks a coarser DCT scale for a smaller size),
letterbox and normalise, and ONNX Runtime (1 thread, batch 1), medians of ``--repeat`` runs.

A short budget makes every model weaker than the shipped one (trained longer); the comparison is between sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.onnx_export import export_onnx
from export.pipeline import load_torch_model
from model.card import CHECKPOINT_NAME
from model.config import CLASSES, SIX_STAGES, NetworkConfig, Preprocessing
from model.data import split_seeds, synthetic_split
from model.preprocess import decode_photo, letterbox, normalize
from model.synth import render_photo, sample_factors
from model.train import TrainOptions, predict_logits, train

WIDTHS = ("hairline", "thin", "thick")
FIXED_FALSE_POSITIVES = 0.10


def crack_widths(n: int, seed: int) -> list[str | None]:
    """The crack width the generator drew for each test photo (None for general_returns)."""
    seeds = split_seeds("test", n, seed)
    out: list[str | None] = []
    for i, s in enumerate(seeds):
        label = CLASSES[i % len(CLASSES)]
        out.append(sample_factors(int(s), label, "test")["crack_width"] if label == "screen_damage" else None)
    return out


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a positive scores above a negative (ties count half)."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    return float(greater + 0.5 * (positives[:, None] == negatives[None, :]).mean())


def short_training(
    config: NetworkConfig, args: argparse.Namespace, out: Path, cache: Path
) -> tuple[dict[str, Any], float, np.ndarray, np.ndarray]:
    """Train ``config`` on ``args``' short budget into ``out`` (photos cached in ``cache``): the model card, the
    seconds training took, and the test split's logits ``(N, 2)`` and labels ``(N,)``."""
    opts = TrainOptions(
        out=out,
        epochs=args.epochs,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        n_shifted=args.n_val,
        cache=cache,
        crack_weight=args.crack_weight,
        twins=getattr(args, "twins", 0.0),  # the comparisons before twins existed ran without them
    )
    started = time.perf_counter()
    card = train(opts, config)
    seconds = time.perf_counter() - started
    net = load_torch_model(out / CHECKPOINT_NAME)
    test = synthetic_split("test", args.n_test, config.preprocessing, cache=cache)
    return card, seconds, predict_logits(net, test, config.preprocessing), test.labels


def accuracy_by_width(size: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    config = NetworkConfig(stages=SIX_STAGES, preprocessing=Preprocessing(size=size))
    out = work / f"size{size}"
    _, seconds, logits, labels = short_training(config, args, out, work / "cache")
    score = logits[:, 0] - logits[:, 1]  # screen_damage against general_returns
    widths = np.array([w or "" for w in crack_widths(args.n_test, 0)])
    negatives = score[labels == 1]
    cut = float(np.quantile(negatives, 1 - FIXED_FALSE_POSITIVES))
    row = {"accuracy": float((logits.argmax(1) == labels).mean()), "train_s": seconds}
    row["false_positive"] = float((negatives > 0).mean())
    for width in WIDTHS:
        positives = score[widths == width]
        row[width] = float((positives > 0).mean())
        row[f"{width}_at_fp"] = float((positives > cut).mean())
        row[f"{width}_auc"] = auc(positives, negatives)
        row[f"n_{width}"] = len(positives)
    export_onnx(load_torch_model(out / CHECKPOINT_NAME), out / "model.onnx", {})
    row |= latency(out / "model.onnx", config.preprocessing, args.repeat)
    return row


def latency(model: Path, spec: Preprocessing, repeat: int) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    jpeg = render_photo(1, "screen_damage", split="test", size=(4032, 3024)).encode()
    decode, prep, infer = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        photo = decode_photo(jpeg, draft_to=spec.size, draft=spec.jpeg_draft)
        t1 = time.perf_counter()
        x = normalize(letterbox(photo, spec)[0][None], spec)
        t2 = time.perf_counter()
        session.run(["logits"], {session.get_inputs()[0].name: x})
        t3 = time.perf_counter()
        decode.append(t1 - t0), prep.append(t2 - t1), infer.append(t3 - t2)
    med = {k: 1000 * float(np.median(v)) for k, v in {"decode_ms": decode, "prep_ms": prep, "infer_ms": infer}.items()}
    return med | {"total_ms": sum(med.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256, 320, 384])
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--crack-weight", type=float, default=0.0, help="0: the recipe the published table used")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {size: accuracy_by_width(size, args, Path(tmp)) for size in args.sizes}
    first = next(iter(rows.values()))
    print(f"\n{args.n_train} training photos x {args.epochs} epochs per size; test split of {args.n_test} photos")
    counts = ", ".join(f"{width} {first['n_' + width]}" for width in WIDTHS)
    print(f"(damaged photos by crack width: {counts})\n")
    print("At the model's own decision (argmax), damaged-photo recall by crack width and false positives:\n")
    print("| input px | hairline | thin | thick | false positives | accuracy | train s |\n|---:|" + "---:|" * 6)
    for size, r in rows.items():
        cells = [f"{r[w]:.1%}" for w in WIDTHS] + [f"{r['false_positive']:.1%}", f"{r['accuracy']:.1%}"]
        print(f"| {size} | " + " | ".join(cells) + f" | {r['train_s']:.0f} |")
    print("\nThreshold-free: ROC AUC of each crack width against all general_returns photos, and recall at the")
    print(
        f"threshold that lets {FIXED_FALSE_POSITIVES:.0%} of general_returns through; latency of one 4032x3024 JPEG:\n"
    )
    head = [f"{w} AUC" for w in WIDTHS] + [f"{w} recall" for w in WIDTHS]
    head += ["decode ms", "preprocess ms", "inference ms", "total ms"]
    print("| input px | " + " | ".join(head) + " |\n|---:|" + "---:|" * len(head))
    for size, r in rows.items():
        cells = [f"{r[w + '_auc']:.3f}" for w in WIDTHS] + [f"{r[w + '_at_fp']:.1%}" for w in WIDTHS]
        cells += [f"{r[k]:.1f}" for k in ("decode_ms", "prep_ms", "infer_ms", "total_ms")]
        print(f"| {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

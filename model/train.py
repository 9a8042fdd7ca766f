"""``triage train``: fit the network, calibrate it, measure it, and write the checkpoint and model card."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.allocator import reuse_freed_memory
from model.augment import apply, draw
from model.card import CARD_NAME, CHECKPOINT_NAME, RETRAINED_NAME, read_card, retrained_version, sha256_file, write_card
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import CLASSES, NetworkConfig, Preprocessing
from model.crack_supervision import crack_head, crack_targets, describe
from model.data import FOLDER_FRACTIONS, ArrayDataset, DataError, image_folder, stratified_split, synthetic_split
from model.initialisation import StartError, checkpoint_path, start_network
from model.metrics import (
    choose_temperature,
    classification_report,
    reaches_precision,
    review_threshold,
    routing_report,
    softmax,
)
from model.network import Network, state_to_numpy
from model.preprocess import normalize
from model.report import write_report
from model.synth.real_photos import PhotoSet, PhotoSetError, resolve_photos
from model.train_hardware import training_device, training_precision
from model.weak_model import warnings_banner, weak_model_warnings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    data: Path | None = None
    out: Path = Path("artifacts")
    epochs: int | None = None
    seed: int = 0
    n_train: int | None = None
    n_val: int = 1000
    n_test: int = 2000
    n_shifted: int = 1000
    batch_size: int = 64
    lr: float | None = None  # None: model.initialisation's rate for where training starts
    weight_decay: float = 5e-4
    patience: int = 6
    target_precision: float = 0.99
    cache: Path | None = None
    precision: str = "auto"  # "auto": bf16 autocast where the device computes bf16 natively, else fp32
    device: str = "auto"  # "auto": CUDA when torch sees a GPU, else CPU
    crack_weight: float = 1.0  # weight of the crack-location loss (model.crack_supervision); 0 turns it off
    twins: float = 0.5  # share of synthetic general_returns training photos that are intact twins of damaged ones
    name: str = RETRAINED_NAME  # the card's name, which serving reports
    version: str | None = None  # the card's version; None: the UTC time training started (model.card)
    photos: Path | None = None  # real photographs for the generator (model.synth.real_photos); None: the Debian set
    n_real: int = 1000  # photos of the ``real`` split, built on real photographs held out of training
    start_from: Path | None = None  # a model folder (or checkpoint) to fine-tune instead of a fresh network


DEFAULT_EPOCHS = 14
DEFAULT_N_TRAIN = 24000
# The pretrained backbone is fine-tuned: fewer photos and passes reach its accuracy (docs/BENCHMARKS.md).
PRETRAINED_EPOCHS = 3
PRETRAINED_N_TRAIN = 6000


def training_batches(
    data: ArrayDataset, spec: Preprocessing, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """One epoch of shuffled, augmented, normalised batches ``(float32 (B, 3, S, S), int64 (B,), cells)``; the last
    partial batch is dropped. Batches keep the pixels' channels-last memory layout, which the network runs in.
    ``cells`` is the batch's ``data.crack_cells`` ``(B, S / 8, S / 8)``, mirrored with the photos that were flipped,
    or None when the data has none.
    """
    order = torch.randperm(len(data), generator=generator).numpy()
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = np.sort(order[start : start + batch_size])
        pixels = torch.from_numpy(data.pixels[idx]).permute(0, 3, 1, 2)  # (B, 3, S, S) view, channels-last
        choices = draw(len(idx), generator)
        x = apply(pixels, choices, mean=spec.mean, std=spec.std)
        cells = None
        if data.crack_cells is not None:
            cells = torch.from_numpy(data.crack_cells[idx])
            cells = torch.where(choices.flip.view(-1, 1, 1), cells.flip(-1), cells)
        yield x, torch.from_numpy(data.labels[idx]), cells


def predict_logits(net: Network, data: ArrayDataset, spec: Preprocessing, batch: int = 256) -> np.ndarray:
    """Eval-time logits ``(N, K)``; inputs are normalised by ``model.preprocess.normalize``, as in serving."""
    net.eval()
    device = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(data), batch):
            x = torch.from_numpy(normalize(data.pixels[i : i + batch], spec)).to(device)
            out.append(net(x.contiguous(memory_format=torch.channels_last)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _load_data(
    opts: TrainOptions, spec: Preprocessing, default_n_train: int
) -> tuple[dict[str, ArrayDataset], dict[str, Any]]:
    if opts.data is not None:
        full, skipped = image_folder(opts.data, spec)
        for path, why in skipped:
            log.warning("skipped unreadable %s (%s)", path, why)
        print(f"{opts.data}: {len(full)} photos, {len(skipped)} unreadable skipped")
        train, val, test = stratified_split(full, FOLDER_FRACTIONS, opts.seed)
        splits = {"train": train, "val": val, "test": test}
        short = {name: CLASSES[k] for name, part in splits.items() for k in range(len(CLASSES)) if k not in part.labels}
        if short:
            counts = {name: int((full.labels == k).sum()) for k, name in enumerate(CLASSES)}
            raise DataError(
                f"{opts.data}: too few photos to give every class training, validation and test photos "
                f"({counts}; 15% of a class goes to validation and 15% to test, so each needs 6 or more)"
            )
        description = {"kind": "image_folder", "root": str(opts.data), "skipped_unreadable": len(skipped)}
    else:
        n_train = default_n_train if opts.n_train is None else opts.n_train
        sizes = {"train": n_train, "val": opts.n_val, "test": opts.n_test, "shifted": opts.n_shifted}
        sizes["real"] = opts.n_real
        photos = _real_photos(opts.photos)
        splits = {}
        for name, n in sizes.items():
            started = time.perf_counter()
            twins = opts.twins if name == "train" else 0.0
            splits[name] = synthetic_split(name, n, spec, opts.seed, opts.cache, twins, photos)
            print(f"generated {name}: {n} photos in {time.perf_counter() - started:.1f} s")
        from model.synth import HELD_OUT

        description = {
            "kind": "synthetic",
            "generator": "model.synth (procedural, seeded)",
            "splits": sizes,
            "seed_ranges": "disjoint per split (model.data.split_seeds)",
            "train_twins": opts.twins,
            "held_out_factors": {k: sorted(map(str, v)) for k, v in HELD_OUT.items()},
            "real_photos": photos.describe(),
        }
    return splits, {**description, "counts": {k: len(v) for k, v in splits.items()}}


def _real_photos(folder: Path | None) -> PhotoSet:
    """The real photographs for the generator, checked here so a missing or empty folder is a clear DataError."""
    try:
        photos = resolve_photos(folder)
        for split in ("train", "real"):
            photos.for_split(split)
    except PhotoSetError as exc:
        raise DataError(str(exc)) from exc
    print(f"real photos from {photos.source}: {len(photos.training)} for training, {len(photos.held_out)} held out")
    return photos


def _fit(net: Network, splits: dict[str, ArrayDataset], opts: TrainOptions, epochs: int, lr: float) -> dict[str, Any]:
    spec = net.config.preprocessing
    generator = torch.Generator().manual_seed(opts.seed)
    steps_per_epoch = len(splits["train"]) // opts.batch_size
    crack = crack_head(net.config, opts.crack_weight, splits["train"].crack_cells)
    if crack is not None:
        crack.to(next(net.parameters()).device, memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad] + (list(crack.parameters()) if crack else [])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.02)
    device = next(net.parameters()).device
    last_stage = net.config.stage_names[-1]
    bf16 = training_precision(opts.precision, device) == "bf16"
    best: tuple[float, dict[str, torch.Tensor], int] | None = None
    history = []
    stale = 0
    for epoch in range(1, epochs + 1):
        net.train()
        total, crack_total, seen, correct = 0.0, 0.0, 0, 0
        batches = training_batches(splits["train"], spec, opts.batch_size, generator)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        for x, y, cells in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, maps = net.forward_stages(x.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits.float(), y)
            total += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            if crack is not None and cells is not None:
                targets = crack_targets(cells, net.config).to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    crack_loss = crack.loss(maps[last_stage], targets)
                crack_total += float(crack_loss.detach()) * len(y)
                loss = loss + opts.crack_weight * crack_loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        val_logits = predict_logits(net, splits["val"], spec)
        val_labels = splits["val"].labels
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_labels)))
        val_acc = float((val_logits.argmax(1) == val_labels).mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / seen,
                "train_accuracy": correct / seen,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if crack is not None:
            history[-1]["train_crack_loss"] = crack_total / seen
        print(f"epoch {epoch}: train loss {total / seen:.4f}  val loss {val_loss:.4f}  val acc {val_acc:.4f}")
        if best is None or val_loss < best[0]:
            best = (val_loss, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch)
            stale = 0
        else:
            stale += 1
            if stale >= opts.patience:
                print(f"early stop: no validation improvement for {opts.patience} epochs")
                break
    assert best is not None  # epochs >= 1
    net.load_state_dict(best[1])
    crack_card = describe(crack, opts.crack_weight)
    return {"history": history, "best_epoch": best[2], "epochs_run": len(history), "crack_supervision": crack_card}


def train(opts: TrainOptions, config: NetworkConfig | None = None) -> dict[str, Any]:
    """Train, calibrate and evaluate; write ``opts.out``/triage_checkpoint.npz and model_card.json."""
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    allocator = reuse_freed_memory()
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    if opts.start_from is not None:  # the model to fine-tune brings its own network and preprocessing
        if not checkpoint_path(opts.start_from).is_file():
            raise StartError(f"--from {opts.start_from}: no {CHECKPOINT_NAME} there (give a model folder)")
        base = load_checkpoint(checkpoint_path(opts.start_from)).config
        if config is not None and config.network != base.network:
            raise StartError(f"--from {opts.start_from} holds a {base.network} network, not {config.network}")
        config = base
    config = config or NetworkConfig()
    fresh_scratch = config.network == "scratch" and opts.start_from is None
    spec = config.preprocessing
    epochs = (DEFAULT_EPOCHS if fresh_scratch else PRETRAINED_EPOCHS) if opts.epochs is None else opts.epochs
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    splits, data_description = _load_data(opts, spec, DEFAULT_N_TRAIN if fresh_scratch else PRETRAINED_N_TRAIN)
    data_seconds = time.perf_counter() - started
    if len(splits["train"]) < opts.batch_size:  # a small folder trains in smaller batches
        print(f"{len(splits['train'])} training photos: batches of {len(splits['train'])} instead of {opts.batch_size}")
        opts = replace(opts, batch_size=len(splits["train"]))

    device = training_device(opts.device)
    start = start_network(config, opts.seed, opts.start_from)
    lr = start.lr if opts.lr is None else opts.lr
    net = start.net.to(device, memory_format=torch.channels_last)
    fit = _fit(net, splits, opts, epochs, lr)

    val_logits = predict_logits(net, splits["val"], spec)
    chosen = choose_temperature(val_logits, splits["val"].labels)
    temperature = chosen["temperature"]
    print(temperature_summary(chosen))
    val_probs = softmax(val_logits, temperature)
    threshold = review_threshold(val_probs, splits["val"].labels, opts.target_precision)
    metrics: dict[str, Any] = {}
    for name in ("val", "test", "shifted", "real"):
        if name not in splits:
            continue
        logits = predict_logits(net, splits[name], spec)
        labels = splits[name].labels
        raw = classification_report(softmax(logits), labels, CLASSES)
        calibrated = classification_report(softmax(logits, temperature), labels, CLASSES)
        calibrated["ece_uncalibrated"] = raw["ece"]
        calibrated["routing"] = routing_report(softmax(logits, temperature), labels, threshold)
        metrics[name] = calibrated
        print(
            f"{name}: accuracy {calibrated['accuracy']:.4f}  ECE {calibrated['ece']:.4f} "
            f"(uncalibrated {raw['ece']:.4f})  coverage at threshold {calibrated['routing']['coverage']:.3f}"
        )

    opts.out.mkdir(parents=True, exist_ok=True)
    checkpoint = opts.out / CHECKPOINT_NAME
    calibration = {
        "temperature": temperature,
        "temperature_choice": chosen["choice"],
        "temperature_fitted": chosen["fitted"],
        "val_ece_fitted": chosen["val_ece_fitted"],
        "val_ece_uncalibrated": chosen["val_ece_uncalibrated"],
        "review_threshold": threshold,
        "threshold_reaches_target": reaches_precision(
            val_probs, splits["val"].labels, threshold, opts.target_precision
        ),
        "target_precision": opts.target_precision,
        "fitted_on": "val",
    }
    warnings = weak_model_warnings(metrics, calibration)
    meta = {"calibration": calibration, "seed": opts.seed, "initialisation": start.record}
    if "real_photos" in data_description:
        meta["real_photos_digest"] = data_description["real_photos"]["digest"]
    save_checkpoint(checkpoint, config, state_to_numpy(net), meta)
    seconds = time.perf_counter() - started
    card = {
        "name": opts.name,
        "version": opts.version or retrained_version(started_at),
        "classes": list(CLASSES),
        "preprocessing": spec.to_dict(),
        "network": config.to_dict(),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "calibration": calibration,
        "training": {
            "initialisation": start.record,
            "data": data_description,
            "started_at": started_at.isoformat(timespec="seconds"),
            "seed": opts.seed,
            "epochs": epochs,
            **fit,
            "optimizer": f"AdamW(lr={lr}, weight_decay={opts.weight_decay}), OneCycle schedule",
            "batch_size": opts.batch_size,
            "precision": training_precision(opts.precision, device),
            "device": device.type,
            "seconds_total": round(seconds, 1),
            "seconds_data": round(data_seconds, 1),
            "threads": torch.get_num_threads(),
            "allocator": {"glibc_mallopt": allocator} if allocator else "as the C library sets it",
        },
        "metrics": metrics,
        "warnings": warnings,
        "artifacts": {CHECKPOINT_NAME: {"sha256": sha256_file(checkpoint), "bytes": checkpoint.stat().st_size}},
    }
    write_card(opts.out / CARD_NAME, card)
    print(f"wrote {checkpoint} and {opts.out / CARD_NAME} ({card['name']} {card['version']}) in {seconds:.0f} s")
    report = write_report(opts.out, splits)
    print(f"wrote {report}: curves, confusion, reliability, coverage and the photos it gets wrong")
    if warnings:
        print(warnings_banner(warnings), file=sys.stderr)
    return read_card(opts.out / CARD_NAME)


def temperature_summary(chosen: dict[str, Any]) -> str:
    """One line saying which temperature ``choose_temperature`` kept and why."""
    fitted, raw = chosen["val_ece_fitted"], chosen["val_ece_uncalibrated"]
    if chosen["choice"] == "fitted":
        return f"calibration: temperature {chosen['fitted']:.4g} lowers validation ECE from {raw:.4f} to {fitted:.4f}"
    return (
        f"calibration: the fitted temperature {chosen['fitted']:.4g} would raise validation ECE from {raw:.4f} to "
        f"{fitted:.4f}; kept the uncalibrated probabilities (temperature 1)"
    )

"""The training and export pipeline end to end on a tiny run, and ImageFolder intake for user data."""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from model.card import CARD_NAME, CHECKPOINT_NAME, ONNX_NAME, sha256_file
from model.config import CLASSES, NetworkConfig, Preprocessing
from model.data import DataError, image_folder, split_seeds, stratified_split, synthetic_split
from model.preprocess import prepare


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.pipeline import export_artifacts
    from model.train import TrainOptions, train

    out = tmp_path_factory.mktemp("tiny_run")
    options = TrainOptions(out=out, epochs=1, n_train=64, n_val=32, n_test=32, n_shifted=32, n_real=32, batch_size=16)
    train(replace(options, name="tiny-test-model", version="0.1.2"))
    export_artifacts(out / CHECKPOINT_NAME, out)
    return out


def test_training_writes_a_card_with_calibration_metrics_and_hashes(tiny_run: Path) -> None:
    card = json.loads((tiny_run / CARD_NAME).read_text())
    assert card["classes"] == list(CLASSES)
    assert card["calibration"]["temperature"] > 0
    assert 0.5 <= card["calibration"]["review_threshold"] <= 1.0
    for split in ("test", "shifted", "real"):
        assert set(card["metrics"][split]) >= {"accuracy", "per_class", "confusion", "ece", "routing"}
    photos = card["training"]["data"]["real_photos"]
    held, seen = ({p["sha256"] for p in photos[side]} for side in ("held_out", "training"))
    assert held and seen and not held & seen and len(photos["digest"]) == 64
    for name in (CHECKPOINT_NAME, ONNX_NAME):
        assert card["artifacts"][name]["sha256"] == sha256_file(tiny_run / name)
    assert [row["name"] for row in card["layers"]] == list(NetworkConfig().stage_names)
    assert card["training"]["data"]["held_out_factors"]
    assert card["training"]["precision"] in ("bf16", "fp32")
    crack = card["training"]["crack_supervision"]
    assert crack["used"] and crack["weight"] == 1.0
    assert all(epoch["train_crack_loss"] > 0 for epoch in card["training"]["history"])
    import torch

    assert card["training"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_card_names_the_model_keeps_the_better_temperature_and_lists_its_warnings(tiny_run: Path) -> None:
    """--name/--version reach the card and the ONNX file; the temperature is the fitted one only where it lowers
    validation ECE (derived again here from the card's own numbers); 64 photos for one epoch is a weak model, and
    the card says so in ``warnings``, exactly what ``weak_model_warnings`` finds in it."""
    from model.weak_model import weak_model_warnings

    card = json.loads((tiny_run / CARD_NAME).read_text())
    assert (card["name"], card["version"]) == ("tiny-test-model", "0.1.2")
    meta = {p.key: p.value for p in onnx.load(str(tiny_run / ONNX_NAME)).metadata_props}
    assert (meta["name"], meta["version"]) == ("tiny-test-model", "0.1.2")
    calibration = card["calibration"]
    better = calibration["val_ece_fitted"] < calibration["val_ece_uncalibrated"]
    assert calibration["temperature_choice"] == ("fitted" if better else "uncalibrated")
    assert calibration["temperature"] == (calibration["temperature_fitted"] if better else 1.0)
    assert card["metrics"]["val"]["ece"] == pytest.approx(
        min(calibration["val_ece_fitted"], calibration["val_ece_uncalibrated"])
    )
    assert card["metrics"]["val"]["ece_uncalibrated"] == pytest.approx(calibration["val_ece_uncalibrated"])
    assert card["warnings"] and card["warnings"] == weak_model_warnings(card["metrics"], calibration)


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    import torch

    from model.train_hardware import training_precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert training_precision("auto") == expected
    assert training_precision("fp32") == "fp32" and training_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        training_precision("fp8")


def test_exported_onnx_carries_preprocessing_classes_and_stage_outputs(tiny_run: Path) -> None:
    proto = onnx.load(str(tiny_run / ONNX_NAME))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert Preprocessing.from_dict(json.loads(meta["preprocessing"])) == Preprocessing()
    assert json.loads(meta["classes"]) == list(CLASSES)
    assert [o.name for o in proto.graph.output] == ["logits", *NetworkConfig().stage_names, "unfamiliarity"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_split_seed_ranges_are_disjoint() -> None:
    ranges = {s: set(split_seeds(s, 5000, seed=3).tolist()) for s in ("train", "val", "test", "shifted")}
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ranges[a] & ranges[b]


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_image_folder_skips_unreadable_files_and_reports_them(tmp_path: Path) -> None:
    for label, name in enumerate(CLASSES):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.jpg").write_bytes(_jpeg((label * 200, i * 50, 0)))
    (tmp_path / "screen_damage" / "broken.jpg").write_bytes(b"not a photo")
    data, skipped = image_folder(tmp_path, Preprocessing(size=32))
    assert len(data) == 6 and data.pixels.shape == (6, 32, 32, 3)
    assert np.bincount(data.labels).tolist() == [3, 3]
    assert [p.name for p, _ in skipped] == ["broken.jpg"]
    train, val = stratified_split(data, (2 / 3, 1 / 3), seed=0)
    assert np.bincount(train.labels).tolist() == [2, 2] and np.bincount(val.labels).tolist() == [1, 1]


def test_image_folder_follows_symlinked_folders_once(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.jpg").write_bytes(_jpeg((200, 0, 0)))
    (elsewhere / "loop").symlink_to(elsewhere)  # a cycle must not be walked forever
    root = tmp_path / "photos"
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        (root / name / "a.jpg").write_bytes(_jpeg((label * 200, 0, 0)))
    (root / "screen_damage" / "linked").symlink_to(elsewhere)
    data, skipped = image_folder(root, Preprocessing(size=32))
    assert np.bincount(data.labels).tolist() == [2, 1] and skipped == []


def test_image_folder_names_the_missing_class_folder(tmp_path: Path) -> None:
    (tmp_path / "screen_damage").mkdir()
    with pytest.raises(DataError, match="general_returns"):
        image_folder(tmp_path, Preprocessing())


def test_image_folder_reads_what_the_service_reads_and_skips_the_rest(tmp_path: Path) -> None:
    """HEIC is read as in serving; BMP (which the service refuses) and a decompression bomb are skipped with the
    reason, not fatal; a class folder left with no readable photo is a DataError naming it."""
    import pillow_heif  # noqa: F401  (the HEIF plugin's encoder)

    for label, name in enumerate(CLASSES):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jpg").write_bytes(_jpeg((label * 200, 50, 0)))
    heic = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(heic, "HEIF", quality=90)
    (tmp_path / "general_returns" / "phone.HEIC").write_bytes(heic.getvalue())
    (tmp_path / "screen_damage" / "scan.bmp").write_bytes(_jpeg((1, 2, 3)))
    bomb = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bomb, "PNG")
    raw = bytearray(bomb.getvalue())
    raw[16:24] = (20000).to_bytes(4, "big") * 2  # the IHDR claims 20000x20000: 400 MP, past Pillow's bomb limit
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    (tmp_path / "screen_damage" / "bomb.png").write_bytes(bytes(raw))
    data, skipped = image_folder(tmp_path, Preprocessing(size=32))
    assert np.bincount(data.labels).tolist() == [1, 2]  # the HEIC photo is among general_returns
    reasons = {p.name: why for p, why in skipped}
    assert set(reasons) == {"scan.bmp", "bomb.png"}
    assert "service accepts" in reasons["scan.bmp"] and "DecompressionBomb" in reasons["bomb.png"]
    for path in (tmp_path / "general_returns").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="general_returns"):
        image_folder(tmp_path, Preprocessing(size=32))


def test_triage_train_on_a_small_folder_or_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ten photos per class train (in batches smaller than the default 64); too few photos, a missing folder or
    --epochs 0 are one-line errors with exit status 2, not tracebacks."""
    from datetime import datetime

    from model.card import RETRAINED_NAME, retrained_version
    from triage_cli.commands import WEAK_MODEL, main

    folder = tmp_path / "photos"
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            (folder / name / f"{i}.jpg").write_bytes(_jpeg((label * 200, i * 20, 0)))
    out = tmp_path / "model"
    assert main(["train", "--data", str(folder), "--epochs", "1", "--out", str(out)]) == WEAK_MODEL
    card = json.loads((out / CARD_NAME).read_text())
    assert card["training"]["batch_size"] == 14  # 70% of 20 photos
    assert card["name"] == RETRAINED_NAME and card["version"] == retrained_version(
        datetime.fromisoformat(card["training"]["started_at"])
    )
    err = capsys.readouterr().err  # three validation photos cannot tell a model from a coin: loud, and exit 3
    assert "TOO WEAK" in err and card["warnings"] and all(w in err for w in card["warnings"])
    assert (
        main(["train", "--data", str(folder), "--epochs", "1", "--out", str(out), "--overwrite", "--allow-weak"]) == 0
    )
    for name in CLASSES:
        for path in sorted((folder / name).iterdir())[3:]:
            path.unlink()
    capsys.readouterr()
    assert main(["train", "--data", str(folder), "--epochs", "1", "--out", str(out)]) == 2
    assert "already holds a model" in capsys.readouterr().err  # the shipped model is not replaced by accident
    assert main(["train", "--data", str(folder), "--epochs", "1", "--out", str(out), "--overwrite"]) == 2
    assert "too few photos" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--overwrite"]) == 2
    assert "missing" in capsys.readouterr().err
    for flag in ("--epochs", "--n-train"):  # --n-train 0 trained on the default 24000 photos
        with pytest.raises(SystemExit) as refused:
            main(["train", flag, "0"])
        assert refused.value.code == 2 and "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gpu", "requested", "expected"), [(True, "auto", "cuda"), (False, "auto", "cpu"), (True, "cpu", "cpu")]
)
def test_training_runs_on_cuda_when_torch_sees_a_gpu(
    monkeypatch: pytest.MonkeyPatch, gpu: bool, requested: str, expected: str
) -> None:
    import torch

    from model.train_hardware import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert training_device(requested).type == expected


def test_cuda_training_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from model.train_hardware import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no usable CUDA device"):
        training_device("cuda")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        training_device("tpu")


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_gpu_follows_its_bf16_support(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str
) -> None:
    import torch

    from model.train_hardware import training_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: not bf16)  # the CPU must not decide
    assert training_precision("auto", torch.device("cuda")) == expected


def test_triage_train_global_pool_max_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--global-pool max`` reaches the network, the card, the ONNX head and the explanation's exact CAM;
    ``--crack-weight 0`` trains without the crack-location loss."""
    import model.train as training
    from export.pipeline import export_artifacts
    from service.explain.explainer import Explainer
    from service.explain.options import ExplainOptions
    from service.inference.engine import TriageEngine
    from service.inference.intake import IntakeLimits, read_photo
    from triage_cli.commands import build_parser

    real_train = training.train

    def small(options: training.TrainOptions, config: NetworkConfig) -> dict:
        tiny = training.TrainOptions(
            out=options.out, epochs=1, n_train=64, n_val=32, n_test=32, n_shifted=32, n_real=32
        )
        return real_train(replace(tiny, batch_size=16, crack_weight=options.crack_weight), config)

    monkeypatch.setattr(training, "train", small)
    argv = ["train", "--global-pool", "max", "--crack-weight", "0", "--out", str(tmp_path), "--allow-weak"]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 0
    card = json.loads((tmp_path / CARD_NAME).read_text())
    assert card["network"]["global_pool"] == "max"
    assert card["training"]["crack_supervision"]["used"] is False
    assert "train_crack_loss" not in card["training"]["history"][0]
    export_artifacts(tmp_path / CHECKPOINT_NAME, tmp_path)
    proto = onnx.load(str(tmp_path / ONNX_NAME))
    producers = {out: node for node in proto.graph.node for out in node.output}
    pool = producers["logits"]  # walk back from the head to the global pool it reads
    while not pool.op_type.startswith("Reduce"):
        pool = producers[pool.input[0]]
    assert pool.op_type == "ReduceMax"
    engine = TriageEngine(tmp_path / ONNX_NAME, device="cpu")
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photo, "PNG")
    prepared, _ = read_photo(photo.getvalue(), engine.preprocessing, IntakeLimits())
    outputs = engine.infer(prepared.tensor[None], engine.output_names)
    explainer = Explainer.from_onnx(tmp_path / ONNX_NAME)
    options = ExplainOptions(layers=(explainer.cam_stage,), channels=1, maps="array")
    cam = explainer.explain(
        prepared, {k: v[0] for k, v in outputs.items()}, engine.decide(outputs["logits"])[0], options
    )
    assert cam["cam"]["pool"] == "max"
    assert cam["cam"]["sum_plus_bias"] == pytest.approx(cam["cam"]["logit"], abs=1e-4)


def test_twin_pairs_spread_a_share_of_pairs_evenly() -> None:
    from model.data import twin_pairs

    assert not twin_pairs(10, 0.0).any() and twin_pairs(10, 1.0).all()
    assert twin_pairs(1000, 0.3).sum() == 150 and len(twin_pairs(7, 0.5)) == 3
    with pytest.raises(ValueError, match="twins must be a share"):
        twin_pairs(10, 1.5)


def test_a_split_with_twins_pairs_each_twin_with_the_damaged_photo_before_it() -> None:
    from model.config import Preprocessing
    from model.synth.render import render_twins

    spec = Preprocessing()
    plain = synthetic_split("train", 6, spec, seed=5)
    twinned = synthetic_split("train", 6, spec, seed=5, twins=0.5)
    assert list(twinned.labels) == list(plain.labels) == [0, 1, 0, 1, 0, 1]
    # pairs 0 and 2 keep their own photos; pair 1 is photo 2 and its intact twin in place of photo 3
    for i in (0, 1, 2, 4, 5):
        assert np.array_equal(twinned.pixels[i], plain.pixels[i])
    seed = int(split_seeds("train", 6, 5)[2])
    _, twin = render_twins(seed, split="train")
    assert np.array_equal(twinned.pixels[3], prepare(twin.encode(), spec).pixels)
    assert not np.array_equal(twinned.pixels[3], plain.pixels[3])
    assert twinned.crack_cells[3].sum() == 0 and twinned.crack_cells[2].sum() > 0


def test_training_batches_are_normalised_as_serving_normalises(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the augmentation drawn to do nothing, a training batch is exactly what ``normalize`` gives the same
    photos at eval time (and serving): the same mean, std and layout."""
    import torch

    from model import train
    from model.augment import Jitter, draw
    from model.data import ArrayDataset
    from model.preprocess import normalize

    monkeypatch.setattr(train, "draw", lambda n, generator: draw(n, generator, Jitter(0.0, 0.0, 0.0, flip=False)))
    spec = Preprocessing()
    rng = np.random.default_rng(3)
    data = ArrayDataset(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.arange(8) % 2, "test")
    (x, labels, cells), *_ = train.training_batches(data, spec, 4, torch.Generator().manual_seed(0))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0)).numpy()
    idx = np.sort(order[:4])
    np.testing.assert_allclose(x.numpy(), normalize(data.pixels[idx], spec), rtol=0, atol=2e-6)
    assert labels.tolist() == data.labels[idx].tolist() and cells is None


def test_training_says_which_temperature_it_kept() -> None:
    from model.train import temperature_summary

    kept = {"choice": "fitted", "fitted": 1.31, "val_ece_fitted": 0.0179, "val_ece_uncalibrated": 0.0182}
    assert temperature_summary(kept) == "calibration: temperature 1.31 lowers validation ECE from 0.0182 to 0.0179"
    worse = {"choice": "uncalibrated", "fitted": 3.2, "val_ece_fitted": 0.1052, "val_ece_uncalibrated": 0.0839}
    line = temperature_summary(worse)
    assert "would raise validation ECE from 0.0839 to 0.1052" in line and "temperature 1" in line

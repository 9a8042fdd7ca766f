"""Where training starts: the pretrained backbone fine-tuned with its early blocks frozen, and ``--from DIR``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model.card import CARD_NAME, CHECKPOINT_NAME, ONNX_NAME, sha256_file
from model.checkpoint import load_checkpoint
from model.config import PRETRAINED_MEAN, PRETRAINED_STD, NetworkConfig, Preprocessing
from model.initialisation import FROZEN_BLOCKS, StartError, start_network

SMALL = Preprocessing(size=64, mean=PRETRAINED_MEAN, std=PRETRAINED_STD)
LITE0 = NetworkConfig(network="efficientnet_lite0", preprocessing=SMALL)


def tiny_options(out: Path, **changes: object) -> object:
    from model.train import TrainOptions

    return TrainOptions(out=out, epochs=1, n_train=32, n_val=16, n_test=16, n_shifted=16, batch_size=16, **changes)


def frozen_names(state: dict) -> list[str]:
    prefixes = ("stem.", *(f"blocks.{i}." for i in range(FROZEN_BLOCKS)))
    return [k for k in state if k.startswith(prefixes)]


def test_the_backbone_starts_frozen_with_its_batch_norms_in_eval_mode() -> None:
    start = start_network(LITE0, seed=0)
    net = start.net
    assert start.record["kind"] == "pretrained" and start.lr == pytest.approx(1e-3)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable and not trainable & set(frozen_names(net.state_dict()))
    assert {n.split(".")[0] if not n.startswith("blocks") else ".".join(n.split(".")[:2]) for n in trainable} == {
        *(f"blocks.{i}" for i in range(FROZEN_BLOCKS, 16)),
        "head",
        "classifier",
    }
    assert start.record["trainable_parameters"] == sum(p.numel() for p in net.parameters() if p.requires_grad)
    net.train()
    assert not net.stem.bn.training and not net.blocks[FROZEN_BLOCKS - 1].project.bn.training
    assert net.blocks[FROZEN_BLOCKS].project.bn.training and net.head.bn.training
    before = net.blocks[0].depthwise.bn.running_mean.clone()
    net(torch.randn(4, 3, 64, 64) * 3)
    assert torch.equal(net.blocks[0].depthwise.bn.running_mean, before)  # frozen statistics did not move


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.pipeline import export_artifacts
    from model.train import train

    out = tmp_path_factory.mktemp("pretrained_run")
    train(tiny_options(out), LITE0)
    export_artifacts(out / CHECKPOINT_NAME, out)
    return out


def test_fine_tuning_changes_only_the_unfrozen_blocks_and_records_the_weights(pretrained_run: Path) -> None:
    from model.pretrained import SHA256, imagenet_state

    checkpoint = load_checkpoint(pretrained_run / CHECKPOINT_NAME)
    assert checkpoint.config == LITE0
    imagenet = imagenet_state()
    for name in frozen_names(checkpoint.weights):
        assert np.array_equal(checkpoint.weights[name], imagenet[name].numpy()), name
    changed = [k for k in checkpoint.weights if k.endswith("conv.weight") and k not in frozen_names(imagenet)]
    assert changed and all(not np.array_equal(checkpoint.weights[k], imagenet[k].numpy()) for k in changed)
    card = json.loads((pretrained_run / CARD_NAME).read_text())
    start = card["training"]["initialisation"]
    assert start["kind"] == "pretrained" and start["sha256"] == SHA256 and "Apache-2.0" in start["licence"]
    assert checkpoint.meta["initialisation"] == start
    assert card["network"]["network"] == "efficientnet_lite0"
    assert card["training"]["epochs"] == 1 and "lr=0.001" in card["training"]["optimizer"]


def test_the_exported_backbone_has_one_output_per_stage_and_its_field_table(pretrained_run: Path) -> None:
    proto = onnx.load(str(pretrained_run / ONNX_NAME))
    assert [o.name for o in proto.graph.output] == ["logits", *LITE0.stage_names, "unfamiliarity"]
    card = json.loads((pretrained_run / CARD_NAME).read_text())
    assert [(row["name"], row["size"], row["jump"]) for row in card["layers"]][-2:] == [
        ("stage7", 851, 32),
        ("head", 851, 32),
    ]
    assert card["artifacts"][ONNX_NAME]["outputs"] == ["logits", *LITE0.stage_names, "unfamiliarity"]


def test_training_from_a_model_folder_keeps_its_network_and_records_the_checkpoint(
    pretrained_run: Path, tmp_path: Path
) -> None:
    from model.train import train

    card = train(tiny_options(tmp_path, start_from=pretrained_run))
    start = card["training"]["initialisation"]
    assert start["kind"] == "checkpoint" and start["sha256"] == sha256_file(pretrained_run / CHECKPOINT_NAME)
    assert start["pretrained"]["kind"] == "pretrained"
    again = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    first = load_checkpoint(pretrained_run / CHECKPOINT_NAME)
    assert again.config == first.config
    assert all(np.array_equal(again.weights[k], first.weights[k]) for k in frozen_names(first.weights))
    assert not np.array_equal(again.weights["classifier.weight"], first.weights["classifier.weight"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "{missing}"], "no triage_checkpoint.npz there"),
        (["--from", "{run}", "--network", "scratch"], "holds a efficientnet_lite0 network, not scratch"),
        (["--network", "efficientnet_lite0", "--global-pool", "max"], "pools by average"),
    ],
)
def test_the_cli_refuses_a_start_it_cannot_make_with_exit_2(
    pretrained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from triage_cli.commands import build_parser

    filled = [a.format(missing=tmp_path / "nothing", run=pretrained_run) for a in argv]
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "out"), *filled])
    assert args.handler(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / CARD_NAME).exists()


def test_start_network_refuses_a_checkpoint_of_another_network(pretrained_run: Path) -> None:
    with pytest.raises(StartError, match="give --network efficientnet_lite0"):
        start_network(NetworkConfig(), seed=0, source=pretrained_run)


def test_a_scratch_model_folder_starts_from_its_weights_and_trains_whole(tmp_path: Path) -> None:
    from model.checkpoint import save_checkpoint
    from model.initialisation import FINE_TUNE_LR
    from model.network import build_network, state_to_numpy

    config = NetworkConfig(preprocessing=Preprocessing(size=64))
    weights = state_to_numpy(build_network(config, seed=7))
    save_checkpoint(tmp_path / CHECKPOINT_NAME, config, weights, {"seed": 7})
    start = start_network(config, seed=0, source=tmp_path)
    assert start.record["kind"] == "checkpoint" and start.record["sha256"] == sha256_file(tmp_path / CHECKPOINT_NAME)
    assert start.lr == FINE_TUNE_LR and "frozen" not in start.record
    assert all(p.requires_grad for p in start.net.parameters())
    state = start.net.state_dict()
    assert all(np.array_equal(state[k].numpy(), v) for k, v in weights.items())
    with pytest.raises(StartError, match="give --network scratch"):
        start_network(LITE0, seed=0, source=tmp_path)

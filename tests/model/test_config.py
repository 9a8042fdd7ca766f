"""The network configuration as it travels with the model: round trips, older artifacts, invalid values."""

from __future__ import annotations

import json
import re

import pytest

from model.config import GLOBAL_POOLS, NetworkConfig, Preprocessing, Stage, efficientnet_lite0


@pytest.mark.parametrize("pool", GLOBAL_POOLS)
def test_config_round_trips_through_json(pool: str) -> None:
    config = NetworkConfig(stages=(Stage("a", 8), Stage("b", 4, pool=0)), global_pool=pool)
    again = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.global_pool == pool


def test_a_config_written_before_the_pool_was_named_averages() -> None:
    """Checkpoints and ONNX metadata written before ``global_pool`` existed came from the average-pooling network."""
    old = NetworkConfig().to_dict()
    del old["global_pool"]
    assert NetworkConfig.from_dict(old).global_pool == "avg"
    assert NetworkConfig(global_pool="max").to_dict()["global_pool"] == "max"


def test_an_unknown_pool_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'median'"):
        NetworkConfig(global_pool="median", preprocessing=Preprocessing())


def test_preprocessing_written_before_the_jpeg_draft_was_named_covers_the_square() -> None:
    """Models made before ``jpeg_draft`` existed were trained on JPEGs reduced only as far as ``size x size``."""
    old = Preprocessing(jpeg_draft="letterbox").to_dict()
    del old["jpeg_draft"]
    assert Preprocessing.from_dict(old).jpeg_draft == "square"
    letterbox = Preprocessing(jpeg_draft="letterbox")
    assert Preprocessing.from_dict(json.loads(letterbox.to_json())) == letterbox


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"jpeg_draft": "Letterbox"}, "jpeg_draft must be one of letterbox, square, got 'Letterbox'"),
        ({"interpolation": "nearest"}, "interpolation must be one of bilinear, bicubic, got 'nearest'"),
        ({"resize": "stretch"}, "resize must be one of letterbox, got 'stretch'"),
        ({"size": 0}, "size >= 1"),
        ({"std": (0.2, 0.0, 0.2)}, "3 positive stds"),
        ({"classes": ()}, "classes"),
    ],
)
def test_a_preprocessing_spec_no_code_path_handles_is_refused_when_read(change: dict, message: str) -> None:
    """From a model card these failed photo by photo: every JPEG a 422, or a KeyError failing a whole batch."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Preprocessing.from_dict({**Preprocessing().to_dict(), **change})


def test_a_config_written_before_networks_were_named_is_the_scratch_network() -> None:
    old = NetworkConfig().to_dict()
    del old["network"]
    assert NetworkConfig.from_dict(old).network == "scratch"
    assert NetworkConfig.from_dict(old) == NetworkConfig()


def test_the_pretrained_config_round_trips_and_refuses_another_recorded_architecture() -> None:
    config = NetworkConfig(network="efficientnet_lite0", preprocessing=Preprocessing(size=224))
    data = json.loads(json.dumps(config.to_dict()))
    assert NetworkConfig.from_dict(data) == config and config.stages == ()
    data["backbone"]["blocks"][3]["kernel"] = 3
    with pytest.raises(ValueError, match="architecture differs"):
        NetworkConfig.from_dict(data)


def test_an_unknown_network_or_a_max_pooled_backbone_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'resnet'"):
        NetworkConfig(network="resnet")
    with pytest.raises(ValueError, match="pools by average"):
        NetworkConfig(network="efficientnet_lite0", global_pool="max")


def test_lite0_blocks_follow_the_published_stage_table() -> None:
    """(repeats, kernel, first stride, expansion, channels) per stage group, read back from the block list."""
    backbone = efficientnet_lite0()
    groups: dict[str, list] = {}
    for block in backbone.blocks:
        groups.setdefault(block.stage, []).append(block)
    table = [(len(b), b[0].kernel, b[0].stride, b[0].expand, b[0].out_channels) for b in groups.values()]
    assert table == [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                     (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]  # fmt: skip
    for prev, block in zip(backbone.blocks, backbone.blocks[1:], strict=False):
        assert block.in_channels == prev.out_channels
        assert all(b.stride == 1 for b in groups[block.stage][1:])
        assert block.residual == (block.stride == 1 and block.in_channels == block.out_channels)
    assert sum(b.residual for b in backbone.blocks) == 16 - 7  # every repeat; no group's first block
    assert backbone.stage_names == ("stem", *groups, "head")


def test_lite0_layers_list_every_convolution_with_its_stage() -> None:
    config = NetworkConfig(network="efficientnet_lite0")
    layers = config.layers()
    # stem, 16 depthwise + 16 project, 15 expansions (block 0 has none), head
    assert len(layers) == 1 + 16 * 2 + 15 + 1
    assert layers[0].stage == "stem" and layers[-1].stage == "head"
    assert [g.name for g in layers if g.kernel > 1] == ["stem", *(f"blocks.{i}.depthwise" for i in range(16))]
    assert all(g.padding == g.kernel // 2 for g in layers)
    assert list(dict.fromkeys(g.stage for g in layers)) == list(config.stage_names)

"""The pretrained EfficientNet-Lite0: its weights package, the checksum, strict loading and an ImageNet photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import MobileNet_V2_Weights

from model import pretrained
from model.config import PRETRAINED_MEAN, PRETRAINED_STD, NetworkConfig, Preprocessing
from model.efficientnet import EfficientNetLite
from model.network import build_network
from model.preprocess import prepare

PHOTO = Path(__file__).parent / "photos" / "ladybird.jpg"
IMAGENET = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # the ImageNet-1k class names, offline


@pytest.fixture(scope="module")
def imagenet_net() -> EfficientNetLite:
    config = NetworkConfig(network="efficientnet_lite0", num_classes=pretrained.IMAGENET_CLASSES)
    return pretrained.load_imagenet(EfficientNetLite(config), with_classifier=True).eval()


def log_probabilities(net: EfficientNetLite, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    spec = Preprocessing(size=224, mean=mean, std=std)
    x = torch.from_numpy(prepare(PHOTO.read_bytes(), spec).tensor[None])
    with torch.inference_mode():
        return net(x).log_softmax(1)[0]


def test_the_shipped_photo_is_an_imagenet_ladybug(imagenet_net: EfficientNetLite) -> None:
    logp = log_probabilities(imagenet_net, PRETRAINED_MEAN, PRETRAINED_STD)
    top5 = [IMAGENET[i] for i in logp.topk(5).indices]
    assert top5[0] == "ladybug", top5
    assert float(logp.exp().max()) > 0.5


def test_the_weights_were_trained_with_the_127_128_normalisation(imagenet_net: EfficientNetLite) -> None:
    """The normalisation ``PRETRAINED_MEAN/STD`` gives the true class more probability than torchvision's."""
    ladybug = IMAGENET.index("ladybug")
    ours = log_probabilities(imagenet_net, PRETRAINED_MEAN, PRETRAINED_STD)[ladybug]
    torchvision = log_probabilities(imagenet_net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))[ladybug]
    assert ours > torchvision


def test_every_published_weight_has_a_name_in_our_network() -> None:
    """Renamed, the published state_dict is exactly the network's (strict loading checks the shapes too)."""
    state = pretrained.imagenet_state()
    ours = EfficientNetLite(NetworkConfig(network="efficientnet_lite0", num_classes=1000)).state_dict()
    assert set(state) == set(ours)
    assert all(state[k].shape == ours[k].shape for k in ours)
    with pytest.raises(ValueError, match=r"_blocks\.0\._squeeze"):
        pretrained.renamed("_blocks.0._squeeze_conv.weight")


def test_build_network_keeps_its_own_two_class_head_over_the_pretrained_body() -> None:
    config = NetworkConfig(network="efficientnet_lite0", preprocessing=Preprocessing(size=64))
    net = build_network(config, seed=0, pretrained=True)
    state = pretrained.imagenet_state()
    assert torch.equal(net.state_dict()["blocks.15.project.conv.weight"], state["blocks.15.project.conv.weight"])
    assert net.classifier.weight.shape == (2, 1280)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_network(NetworkConfig(), pretrained=True)


def test_a_weights_file_with_another_checksum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "SHA256", "0" * 64)
    with pytest.raises(pretrained.PretrainedWeightsError, match="expected 0000"):
        pretrained.imagenet_state()


def test_a_missing_weights_package_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "PACKAGE", "no-such-weights-package")
    with pytest.raises(pretrained.PretrainedWeightsError, match="no-such-weights-package"):
        pretrained.imagenet_state()


def test_provenance_names_the_file_it_checked() -> None:
    record = pretrained.provenance()
    assert record["sha256"] == pretrained.SHA256 and record["package"] == pretrained.PACKAGE
    assert "Apache-2.0" in record["licence"]


def test_stage_maps_are_the_config_stages_with_their_channels_and_sizes() -> None:
    from model.receptive_field import stage_fields

    config = NetworkConfig(network="efficientnet_lite0", preprocessing=Preprocessing(size=72))
    net = build_network(config, seed=0).eval()
    with torch.inference_mode():
        logits, maps = net.forward_stages(torch.zeros(2, 3, 72, 72))
    assert logits.shape == (2, 2)
    assert list(maps) == list(config.stage_names)
    fields = stage_fields(config)
    channels = config.stage_channels()
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {k: (channels[k], *fields[k].out_size) for k in maps}
    # the head is a global average of the last map through the classifier
    with torch.inference_mode():
        again = net.classifier(maps["head"].mean(dim=(2, 3)))
    np.testing.assert_allclose(again.numpy(), logits.numpy(), rtol=1e-6, atol=1e-6)

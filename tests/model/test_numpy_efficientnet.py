"""The NumPy EfficientNet-Lite0 against the PyTorch one: forward maps, input gradients and parameter gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import NetworkConfig, Preprocessing
from model.network import build_network, state_to_numpy
from model.numpy_efficientnet import NumpyEfficientNetLite
from model.numpy_engine import load_numpy_network, numpy_network
from model.numpy_net import CellTarget, LogitTarget, NumpyTriageNet
from tests.lite0_nets import calibrated_lite0

SIZE = 64
GRAD_SIZE = 32  # float64 autograd of PyTorch's depthwise convolutions is slow: gradients on 32 px (maps 16 .. 1 px)
STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")


@pytest.fixture(scope="module")
def net64() -> torch.nn.Module:
    """A float64 network for ``GRAD_SIZE`` inputs."""
    return calibrated_lite0(GRAD_SIZE, seed=4, dtype=torch.float64)


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest elementwise error relative to the reference tensor's largest magnitude."""
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def test_forward_matches_torch_on_every_stage_in_float64_and_float32(tmp_path: Path) -> None:
    """float64: the same function to rounding (1e-12 of each map's largest value). float32: no closer to PyTorch
    float32 than float32 allows (deep stages of this network hold values near 20 and differ by ~1e-4 between any two
    float32 engines), so each float32 map is held to at most twice PyTorch float32's own distance from float64."""
    net = calibrated_lite0(SIZE, seed=3)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net.config, state_to_numpy(net), {"seed": 3})
    ours = load_numpy_network(path)
    ours64 = load_numpy_network(path, dtype=np.float64)
    assert isinstance(ours, NumpyEfficientNetLite) and isinstance(ours64, NumpyEfficientNetLite)
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    logits, maps = ours.forward(x)
    logits64, maps64 = ours64.forward(x.astype(np.float64))
    with torch.no_grad():
        ref32 = dict(zip(("logits", "maps"), net.forward_stages(torch.from_numpy(x)), strict=True))
        ref64 = dict(zip(("logits", "maps"), net.double().forward_stages(torch.from_numpy(x).double()), strict=True))
    assert logits.dtype == np.float32 and list(maps) == list(ref32["maps"]) == list(STAGES)
    outputs = {"logits": (logits, logits64, ref32["logits"], ref64["logits"])}
    outputs.update({k: (maps[k], maps64[k], ref32["maps"][k], ref64["maps"][k]) for k in STAGES})
    for name, (ours32, ours64_, theirs32, theirs64) in outputs.items():
        truth = theirs64.numpy()
        assert ours32.shape == truth.shape and ours32.dtype == np.float32, name
        assert np.abs(truth).max() > (0.1 if name == "logits" else 0.5), name  # calibrated: no stage faded out
        assert rel_err(ours64_, truth) <= 1e-12, name
        own_error = np.abs(theirs32.numpy() - truth).max()
        assert 0 < np.abs(ours32 - truth).max() <= 2 * own_error, name
    trace = ours.forward_trace(x)
    np.testing.assert_array_equal(trace.logits, logits)
    assert all(np.array_equal(trace.maps[k], maps[k]) for k in STAGES)


def test_the_engine_follows_the_configs_network() -> None:
    scratch = NetworkConfig(preprocessing=Preprocessing(size=32))
    assert isinstance(numpy_network(scratch, state_to_numpy(build_network(scratch, seed=0))), NumpyTriageNet)
    lite = calibrated_lite0(32, seed=0)
    assert isinstance(numpy_network(lite.config, state_to_numpy(lite)), NumpyEfficientNetLite)


def test_loss_gradients_match_autograd_on_every_parameter_and_the_input(net64: torch.nn.Module) -> None:
    ours = NumpyEfficientNetLite.from_weights(net64.config, state_to_numpy(net64), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, GRAD_SIZE, GRAD_SIZE))
    labels = np.array([0, 1])
    loss, grads = ours.loss_and_gradients(x, labels)
    xt = torch.tensor(x, requires_grad=True)
    net64.zero_grad()
    ref_loss = torch.nn.functional.cross_entropy(net64(xt), torch.tensor(labels))
    ref_loss.backward()
    ref = {name: p.grad.numpy() for name, p in net64.named_parameters()}
    assert loss == pytest.approx(ref_loss.item(), rel=1e-10)
    assert set(grads.params) == set(ref)
    errors = {name: rel_err(grads.params[name], value) for name, value in ref.items()}
    errors["input"] = rel_err(grads.input, xt.grad.numpy())
    assert max(errors.values()) <= 1e-9, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    assert all(g.dtype == np.float64 for g in grads.params.values())


@pytest.mark.parametrize(
    "target",
    [
        LogitTarget(1),
        CellTarget("stem", 5, 7),
        CellTarget("stage2", 3, 1),  # a stage whose last block is residual
        CellTarget("stage7", 0, 0, channel=3),  # the head's input: a stage seed joins the head's gradient
    ],
    ids=repr,
)
def test_input_gradients_of_logits_and_cells_match_autograd(net64: torch.nn.Module, target: object) -> None:
    ours = NumpyEfficientNetLite.from_weights(net64.config, state_to_numpy(net64), dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((1, 3, GRAD_SIZE, GRAD_SIZE))
    xt = torch.tensor(x, requires_grad=True)
    logits, maps = net64.forward_stages(xt)
    if isinstance(target, LogitTarget):
        value = logits[:, target.class_index].sum()
    else:
        cell = maps[target.stage][:, :, target.y, target.x]
        value = (cell if target.channel is None else cell[:, target.channel]).sum()
    (ref,) = torch.autograd.grad(value, xt)  # the input's gradient only: no weight gradients to compute
    ours_grad = ours.backward_to_input(ours.forward_trace(x), target)
    assert np.abs(ref.numpy()).max() > 0 and rel_err(ours_grad, ref.numpy()) <= 1e-10


@pytest.mark.parametrize("stage", ["stage3", "stage7", "head"])
def test_a_stage_seed_adds_to_the_logit_seed(net64: torch.nn.Module, stage: str) -> None:
    ours = NumpyEfficientNetLite.from_weights(net64.config, state_to_numpy(net64), dtype=np.float64)
    trace = ours.forward_trace(np.random.default_rng(3).standard_normal((1, 3, GRAD_SIZE, GRAD_SIZE)))
    dlogits = np.array([[1.0, -2.0]])
    dmap = np.random.default_rng(4).standard_normal(trace.maps[stage].shape)
    both = ours.backward(trace, dlogits=dlogits, dmaps={stage: dmap})
    apart = [ours.backward(trace, dlogits=dlogits), ours.backward(trace, dmaps={stage: dmap})]
    assert rel_err(both.input, apart[0].input + apart[1].input) <= 1e-12
    for name, grad in both.folded.items():
        assert rel_err(grad, apart[0].folded[name] + apart[1].folded[name]) <= 1e-12, name
    assert not apart[1].folded["classifier.weight"].any()
    if stage != "head":
        assert not apart[1].folded["head.weight"].any() and apart[1].folded["stem.weight"].any()


def test_folded_weights_give_the_checkpoints_forward(net64: torch.nn.Module) -> None:
    """An engine built from folded convolutions (as an ONNX file holds them) computes the same maps."""
    ours = NumpyEfficientNetLite.from_weights(net64.config, state_to_numpy(net64), dtype=np.float64)
    folded = {name: (p.w, p.b) for name, p in ours.units.items()}
    again = NumpyEfficientNetLite.from_folded(
        net64.config, folded, (ours.classifier_w, ours.classifier_b), dtype=np.float64
    )
    x = np.random.default_rng(5).standard_normal((1, 3, GRAD_SIZE, GRAD_SIZE))
    (la, ma), (lb, mb) = ours.forward(x), again.forward(x)
    np.testing.assert_allclose(la, lb, rtol=1e-12)
    assert all(np.allclose(ma[k], mb[k], rtol=1e-12, atol=1e-14) for k in STAGES)
    grad_a = ours.backward_to_input(ours.forward_trace(x), CellTarget("stage4", 1, 1))
    grad_b = again.backward_to_input(again.forward_trace(x), CellTarget("stage4", 1, 1))
    np.testing.assert_allclose(grad_a, grad_b, rtol=1e-10, atol=1e-14)


def test_errors_name_shapes_units_and_stages(net64: torch.nn.Module) -> None:
    weights = state_to_numpy(net64)
    ours = NumpyEfficientNetLite.from_weights(net64.config, weights)
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        ours.forward(np.zeros((1, 1, GRAD_SIZE, GRAD_SIZE), np.float32))
    trace = ours.forward_trace(np.zeros((1, 3, GRAD_SIZE, GRAD_SIZE), np.float32))
    with pytest.raises(ValueError, match=r"outside stage1 map of shape \(1, 16, 16, 16\)"):
        ours.backward_to_input(trace, CellTarget("stage1", 16, 0))
    with pytest.raises(ValueError, match="unknown stages"):
        ours.backward(trace, dmaps={"stage9": np.zeros(1)})
    with pytest.raises(ValueError, match="needs dlogits"):
        ours.backward(trace)
    with pytest.raises(ValueError, match=r"lack 'blocks\.4\.depthwise\.bn\.running_var'"):
        NumpyEfficientNetLite.from_weights(
            net64.config, {k: v for k, v in weights.items() if k != "blocks.4.depthwise.bn.running_var"}
        )
    bad = {**weights, "blocks.4.depthwise.conv.weight": np.zeros((240, 240, 5, 5), np.float32)}
    with pytest.raises(ValueError, match=r"has shape \(240, 240, 5, 5\), the config needs \(240, 1, 5, 5\)"):
        NumpyEfficientNetLite.from_weights(net64.config, bad)
    with pytest.raises(ValueError, match="'scratch' is not a backbone network"):
        NumpyEfficientNetLite.from_weights(NetworkConfig(), weights)

"""The NumPy triage network against the PyTorch one: forward maps, input gradients and parameter gradients."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import NetworkConfig, Preprocessing, Stage
from model.network import TriageNet, build_network, state_to_numpy
from model.numpy_net import CellTarget, LogitTarget, NumpyTriageNet

# The default geometry (kernels, strides, paddings, dilation, pools) with narrow stages and a small input.
SMALL = NetworkConfig(
    stages=(
        Stage("stage1", 4, stride=2),
        Stage("stage2", 5),
        Stage("stage3", 6),
        Stage("stage4", 6, pool=0),
        Stage("stage5", 7, padding=2, dilation=2, pool=0),
    ),
    preprocessing=Preprocessing(size=48),
)


def random_net(config: NetworkConfig, seed: int) -> TriageNet:
    """A network with random weights *and* random batch-norm statistics, so folding is exercised."""
    net = build_network(config, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.1)
    return net.eval()


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest elementwise error relative to the reference tensor's largest magnitude."""
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def test_forward_matches_torch_float32_with_folded_batchnorm(tmp_path: Path) -> None:
    net = random_net(NetworkConfig(preprocessing=Preprocessing(size=64)), seed=3)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net.config, state_to_numpy(net), {"seed": 3})
    ours = NumpyTriageNet.from_checkpoint(path)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    logits, maps = ours.forward(x)
    with torch.no_grad():
        ref_logits, ref_maps = net.forward_stages(torch.from_numpy(x))
    assert logits.dtype == np.float32 and list(maps) == list(ref_maps)
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=1e-5, atol=1e-5)
    for name, ref in ref_maps.items():
        assert maps[name].shape == tuple(ref.shape) and maps[name].dtype == np.float32
        np.testing.assert_allclose(maps[name], ref.numpy(), rtol=1e-5, atol=1e-5)


def _torch_loss_grads(net: TriageNet, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    xt = torch.tensor(x, requires_grad=True)
    net.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(xt), torch.tensor(labels))
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in net.named_parameters()}
    return loss.item(), {"input": xt.grad.numpy(), **grads}


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_gradients_match_autograd_on_every_parameter_and_the_input(dtype: type[np.floating], pool: str) -> None:
    """float64: max relative error <= 1e-4 is checked with a far tighter 1e-9; float32 against float32 autograd
    (different summation orders on both sides) stays within the 1e-4 bound. Both global pools."""
    config = replace(SMALL, global_pool=pool)
    net = random_net(config, seed=11).to(torch.float64 if dtype is np.float64 else torch.float32)
    ours = NumpyTriageNet.from_weights(config, state_to_numpy(net), dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 48, 48)).astype(dtype)
    labels = np.array([0, 1, 1])
    loss, grads = ours.loss_and_gradients(x, labels)
    ref_loss, ref = _torch_loss_grads(net, x, labels)
    bound = 1e-9 if dtype is np.float64 else 1e-4
    assert loss == pytest.approx(ref_loss, rel=bound)
    assert set(grads.params) == set(ref) - {"input"}
    errors = {name: rel_err(grads.params.get(name, grads.input), value) for name, value in ref.items()}
    assert max(errors.values()) <= bound, errors
    assert all(grads.params[name].dtype == dtype for name in grads.params) and grads.input.dtype == dtype


def test_input_gradients_of_logits_and_cells_match_autograd() -> None:
    net = random_net(SMALL, seed=5).double()
    ours = NumpyTriageNet.from_weights(SMALL, state_to_numpy(net), dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((2, 3, 48, 48))
    trace = ours.forward_trace(x)
    targets = [
        LogitTarget(1),
        CellTarget("stage1", 5, 7, channel=2),
        CellTarget("stage3", 1, 2),
        CellTarget("stage5", 2, 0, channel=6),
    ]
    for target in targets:
        xt = torch.tensor(x, requires_grad=True)
        logits, maps = net.forward_stages(xt)
        if isinstance(target, LogitTarget):
            value = logits[:, target.class_index].sum()
        else:
            cell = maps[target.stage][:, :, target.y, target.x]
            value = (cell if target.channel is None else cell[:, target.channel]).sum()
        value.backward()
        assert rel_err(ours.backward_to_input(trace, target), xt.grad.numpy()) <= 1e-10, target


def test_backward_combines_logit_and_stage_seeds_linearly() -> None:
    ours = NumpyTriageNet.from_weights(SMALL, state_to_numpy(random_net(SMALL, seed=2)), dtype=np.float64)
    trace = ours.forward_trace(np.random.default_rng(3).standard_normal((1, 3, 48, 48)))
    dlogits = np.array([[1.0, -2.0]])
    dmap = np.random.default_rng(4).standard_normal(trace.maps["stage2"].shape)
    both = ours.backward(trace, dlogits=dlogits, dmaps={"stage2": dmap})
    apart = [ours.backward(trace, dlogits=dlogits), ours.backward(trace, dmaps={"stage2": dmap})]
    np.testing.assert_allclose(both.input, apart[0].input + apart[1].input, rtol=1e-12, atol=1e-14)
    for name, grad in both.folded.items():
        np.testing.assert_allclose(grad, apart[0].folded[name] + apart[1].folded[name], rtol=1e-12, atol=1e-14)
    assert not apart[1].folded["stage5.weight"].any() and not apart[1].folded["head.bias"].any()


def test_errors_name_shapes_and_stages() -> None:
    weights = state_to_numpy(random_net(SMALL, seed=0))
    ours = NumpyTriageNet.from_weights(SMALL, weights)
    with pytest.raises(ValueError, match=r"\(1, 1, 48, 48\)"):
        ours.forward(np.zeros((1, 1, 48, 48), np.float32))
    trace = ours.forward_trace(np.zeros((1, 3, 48, 48), np.float32))
    with pytest.raises(ValueError, match="unknown stage 'stage9'"):
        ours.backward_to_input(trace, CellTarget("stage9", 0, 0))
    with pytest.raises(ValueError, match=r"outside stage1 map of shape \(1, 4, 12, 12\)"):
        ours.backward_to_input(trace, CellTarget("stage1", 12, 0))
    with pytest.raises(ValueError, match=r"out of range for logits shape \(1, 2\)"):
        ours.backward_to_input(trace, LogitTarget(2))
    with pytest.raises(ValueError, match="needs dlogits"):
        ours.backward(trace)
    with pytest.raises(ValueError, match=r"lack 'head\.bias'"):
        NumpyTriageNet.from_weights(SMALL, {k: v for k, v in weights.items() if k != "head.bias"})
    needs = NetworkConfig().stages[0].channels
    with pytest.raises(ValueError, match=rf"has shape \(4, 3, 3, 3\), the config needs \({needs}, 3, 3, 3\)"):
        NumpyTriageNet.from_weights(NetworkConfig(), weights)


# Pool 3 (stride 3), a stride-2 convolution, padding 1 with dilation 2 (padding != dilation): the default network
# has none of these, and a non-square input catches height and width swapped anywhere.
ODD = NetworkConfig(
    stages=(Stage("a", 4, stride=2, pool=3), Stage("b", 5, padding=1, dilation=2, pool=0), Stage("c", 3, pool=0)),
    preprocessing=Preprocessing(size=40),
)


def test_unusual_geometry_on_a_non_square_input_matches_torch_forward_and_backward() -> None:
    net = random_net(ODD, seed=7).double()
    ours = NumpyTriageNet.from_weights(ODD, state_to_numpy(net), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 33))
    logits, maps = ours.forward(x)
    with torch.no_grad():
        ref_logits, ref_maps = net.forward_stages(torch.from_numpy(x))
    assert rel_err(logits, ref_logits.numpy()) <= 1e-10
    for name, ref in ref_maps.items():
        assert maps[name].shape == tuple(ref.shape) and rel_err(maps[name], ref.numpy()) <= 1e-10, name
    labels = np.array([1, 0])
    loss, grads = ours.loss_and_gradients(x, labels)
    ref_loss, ref = _torch_loss_grads(net, x, labels)
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    errors = {name: rel_err(grads.params.get(name, grads.input), value) for name, value in ref.items()}
    assert max(errors.values()) <= 1e-9, errors


@pytest.mark.parametrize("stage", ["stage2", "stage5"], ids=["inner-stage", "last-stage"])
def test_a_stage_seed_adds_to_the_logit_seed_on_any_stage(stage: str) -> None:
    """The last stage also feeds the head: its seed and the logits' gradient must add there too."""
    ours = NumpyTriageNet.from_weights(SMALL, state_to_numpy(random_net(SMALL, seed=2)), dtype=np.float64)
    trace = ours.forward_trace(np.random.default_rng(3).standard_normal((2, 3, 48, 48)))
    dlogits = np.array([[1.0, -2.0], [0.5, 0.3]])
    dmap = np.random.default_rng(4).standard_normal(trace.maps[stage].shape)
    both = ours.backward(trace, dlogits=dlogits, dmaps={stage: dmap}).input
    apart = ours.backward(trace, dlogits=dlogits).input + ours.backward(trace, dmaps={stage: dmap}).input
    np.testing.assert_allclose(both, apart, rtol=1e-12, atol=1e-14)


def test_a_float32_engine_computes_a_float64_input_in_float32() -> None:
    ours = NumpyTriageNet.from_weights(SMALL, state_to_numpy(random_net(SMALL, seed=0)))
    logits, maps = ours.forward(np.random.default_rng(0).standard_normal((1, 3, 48, 48)))
    assert logits.dtype == np.float32 and all(m.dtype == np.float32 for m in maps.values())


def test_seeds_and_targets_are_checked_against_non_square_maps() -> None:
    ours = NumpyTriageNet.from_weights(ODD, state_to_numpy(random_net(ODD, seed=1)))
    trace = ours.forward_trace(np.zeros((1, 3, 40, 33), np.float32))
    _, _, h, w = trace.maps["a"].shape
    assert h > w  # a row index that exists only as a column index would pass a swapped check
    with pytest.raises(ValueError, match=rf"outside a map of shape \(1, 4, {h}, {w}\)"):
        ours.backward_to_input(trace, CellTarget("a", 0, w))
    ours.backward_to_input(trace, CellTarget("a", h - 1, 0))
    with pytest.raises(
        ValueError, match=rf"gradient for a has shape \(1, 4, {w}, {h}\), the map is \(1, 4, {h}, {w}\)"
    ):
        ours.backward(trace, dmaps={"a": np.zeros((1, 4, w, h), np.float32)})

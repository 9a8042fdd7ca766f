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

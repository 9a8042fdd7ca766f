"""Export the trained network to one self-contained ONNX file with stage outputs and preprocessing metadata, and,
for a model that abstains on the unfamiliar, the familiarity distance of each photo (``model.familiarity``)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from torch import nn

from export.familiarity_head import FamiliarityHead
from model.config import INPUT_NAME, LOGITS_NAME, NetworkConfig
from model.familiarity import UNFAMILIARITY_NAME, Familiarity
from model.network import Network

__all__ = ["INPUT_NAME", "LOGITS_NAME", "OPSET", "export_onnx", "output_names"]

OPSET = 18


class _StagesAndLogits(nn.Module):
    """Returns ``(logits, stage1, ..., stageN)`` so every stage is a named ONNX output, then the ``(N,)`` familiarity
    distance of the last stage's map when a ``FamiliarityHead`` is given."""

    def __init__(self, net: Network, familiarity: FamiliarityHead | None = None) -> None:
        super().__init__()
        self.net = net
        self.familiarity = familiarity

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, maps = self.net.forward_stages(x)
        stages = tuple(maps.values())
        if self.familiarity is None:
            return (logits, *stages)
        return (logits, *stages, self.familiarity(stages[-1]))


def output_names(config: NetworkConfig, familiarity: Familiarity | None = None) -> list[str]:
    """The graph's outputs in order: logits, every stage, and ``unfamiliarity`` when the model abstains."""
    return [LOGITS_NAME, *config.stage_names, *([UNFAMILIARITY_NAME] if familiarity is not None else [])]


def export_onnx(
    net: Network, path: Path, metadata: dict[str, str], familiarity: Familiarity | None = None
) -> onnx.ModelProto:
    """Write ``net`` (eval mode) to ``path``: dynamic batch axis, opset ``OPSET``, checked, metadata attached.

    ``metadata`` values must be strings (JSON for structured values); the preprocessing spec and class names
    are always added from the network's config. With ``familiarity`` the graph also computes each photo's
    distance (output ``unfamiliarity``, ``(N,)`` float32); the threshold stays in the model card.
    """
    net = net.eval()
    size = net.config.preprocessing.size
    dummy = torch.zeros(1, net.config.in_channels, size, size)
    names = output_names(net.config, familiarity)
    head = FamiliarityHead(familiarity) if familiarity is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _StagesAndLogits(net, head).eval(),  # a fresh wrapper is in train mode; export would restore that
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=names,
        dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}},
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )
    proto = onnx.load(str(path))
    meta = {
        "preprocessing": net.config.preprocessing.to_json(),
        "classes": json.dumps(list(net.config.preprocessing.classes)),
        "network": json.dumps(net.config.to_dict(), sort_keys=True),
        **metadata,
    }
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "ticket-photo-triage"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto

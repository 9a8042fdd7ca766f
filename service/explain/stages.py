"""What each stage of the served network is, in words, from its configuration (the ONNX file's ``network``
metadata): the explanation answer carries these so that the page's captions describe the model actually served,
whichever network it is.

The scratch CNN's stage is one ``conv -> batch-norm -> ReLU [-> max-pool]``; EfficientNet-Lite0's are its stem, its
groups of inverted-residual blocks and its 1x1 head. The last stage's note says what follows it (the global pool
and the linear layer the class-activation map decomposes).
"""

from __future__ import annotations

from typing import Any

from model.config import Backbone, InvertedResidual, NetworkConfig, Stage

TIMES = "\u00d7"


def _scratch_stage(stage: Stage) -> str:
    conv = f"conv {stage.kernel}{TIMES}{stage.kernel}"
    if stage.stride != 1:
        conv += f" stride {stage.stride}"
    if stage.dilation != 1:
        conv += f" dilation {stage.dilation}"
    pool = f", max-pool {stage.pool}{TIMES}{stage.pool}" if stage.pool else ""
    return f"{conv}, batch-norm, ReLU{pool}"


def _block_group(blocks: list[tuple[int, InvertedResidual]]) -> str:
    first_index, first = blocks[0]
    last_index = blocks[-1][0]
    span = f"block {first_index}" if first_index == last_index else f"blocks {first_index}\u2013{last_index}"
    depthwise = f"{first.kernel}{TIMES}{first.kernel} depthwise"
    strided = [(i, b.stride) for i, b in blocks if b.stride != 1]
    if strided:
        depthwise += f" (stride {strided[0][1]} in block {strided[0][0]})"
    parts = [depthwise] if first.expand == 1 else [f"1{TIMES}1 expand {TIMES}{first.expand}", depthwise]
    relu6 = "with ReLU6" if len(parts) == 1 else "each with ReLU6"
    note = f"{span}: inverted residual, {', '.join(parts)} {relu6}, then a linear 1{TIMES}1 project"
    residual = [i for i, b in blocks if b.residual]
    if len(residual) == 1:
        note += f"; block {residual[0]} adds its input"
    elif residual:
        note += f"; blocks {', '.join(map(str, residual))} add their input"
    return note


def _backbone_stages(backbone: Backbone) -> dict[str, str]:
    stem = backbone.stem
    notes = {"stem": f"conv {stem.kernel}{TIMES}{stem.kernel} stride {stem.stride}, batch-norm, ReLU6"}
    groups: dict[str, list[tuple[int, InvertedResidual]]] = {}
    for i, block in enumerate(backbone.blocks):
        groups.setdefault(block.stage, []).append((i, block))
    notes.update({stage: _block_group(blocks) for stage, blocks in groups.items()})
    head = backbone.head
    notes["head"] = f"conv {head.kernel}{TIMES}{head.kernel} to {head.out_channels} channels, batch-norm, ReLU6"
    return notes


def stage_notes(config: NetworkConfig) -> dict[str, str]:
    """``{stage name: what the stage computes}`` in stage order; the last one says what the head does with it."""
    backbone = config.backbone
    notes = _backbone_stages(backbone) if backbone else {s.name: _scratch_stage(s) for s in config.stages}
    pool = "global average pool" if config.global_pool == "avg" else "global max pool"
    last = config.stage_names[-1]
    notes[last] += f"; then the {pool} and the linear classifier"
    return notes


def network_summary(config: NetworkConfig) -> dict[str, Any]:
    """The answer's ``network`` entry: its name, input side and stages in order."""
    return {
        "name": config.network,
        "input_size": config.preprocessing.size,
        "stages": list(config.stage_names),
        "global_pool": config.global_pool,
    }

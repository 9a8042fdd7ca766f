"""Seeded, procedural ticket photos for training and evaluating the triage model (numpy + Pillow only).

``render_photo(seed, label, split=..., size=...)`` draws one photo of a ``screen_damage`` ticket (a phone,
tablet, laptop or monitor with a cracked screen) or a ``general_returns`` ticket (intact devices, boxes,
labels, documents, cables, packaging and crack-like surfaces such as marble). The ``shifted`` split also
draws held-out factor values (:data:`HELD_OUT`). ``write_imagefolder`` writes an ImageFolder tree.

Modules: ``factors`` (the factor space and held-out values), ``geometry`` (camera, homographies, warps),
``textures`` (surfaces), ``scene`` (background, lighting, camera effects), ``screens`` (screen content),
``devices``, ``cracks`` (fracture patterns), ``damage`` (drawing them), ``paper`` (printed and packaging
artwork), ``negatives`` (boxes, sheets, cables), ``occluders`` (fingers, stickers), ``photo``
(``SynthPhoto`` and encoding), ``render`` (composition) and ``imagefolder``.
"""

from model.synth.factors import CLASSES, HELD_OUT, SPLITS, sample_factors
from model.synth.imagefolder import write_imagefolder
from model.synth.photo import SynthPhoto
from model.synth.render import render_photo

#: Bump whenever rendering changes, so that cached datasets are rebuilt.
GENERATOR_VERSION = "2"

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "HELD_OUT",
    "SPLITS",
    "SynthPhoto",
    "render_photo",
    "sample_factors",
    "write_imagefolder",
]

"""Seeded, procedural ticket photos for training and evaluating the triage model (numpy + Pillow only).

``render_photo(seed, label, split=..., size=...)`` draws one photo of a ``screen_damage`` ticket (a phone,
tablet, laptop or monitor with a cracked screen) or a ``general_returns`` ticket (intact devices, boxes,
labels, documents, cables, packaging and crack-like surfaces such as marble). The ``shifted`` split also
draws held-out factor values (:data:`HELD_OUT`). With ``photos=`` (a :class:`PhotoSet` of real photographs), a
share of photos is built on a real one; the ``real`` split uses only photos held out of training, by sha256.
``write_imagefolder`` writes an ImageFolder tree.

Modules: ``factors`` (the factor space and held-out values), ``geometry`` (camera, homographies, warps),
``textures`` (surfaces), ``scene`` (background, lighting, camera effects), ``screens`` (screen content),
``devices``, ``cracks`` (fracture patterns), ``damage`` (drawing them), ``paper`` (printed and packaging
artwork), ``negatives`` (boxes, sheets, cables), ``occluders`` (fingers, stickers), ``photo``
(``SynthPhoto`` and encoding), ``real_photos`` (real photographs and their split by photo), ``real_scenes`` (how
a photo uses one), ``render`` (composition) and ``imagefolder``.
"""

from model.synth.factors import CLASSES, HELD_OUT, PHOTO_SPLITS, SPLITS, sample_factors
from model.synth.imagefolder import write_imagefolder
from model.synth.photo import SynthPhoto
from model.synth.real_photos import PhotoSet, PhotoSetError, debian_photos, folder_photos, resolve_photos
from model.synth.render import render_photo

#: Bump whenever rendering changes, so that cached datasets are rebuilt.
GENERATOR_VERSION = "3"

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "HELD_OUT",
    "PHOTO_SPLITS",
    "SPLITS",
    "PhotoSet",
    "PhotoSetError",
    "SynthPhoto",
    "debian_photos",
    "folder_photos",
    "render_photo",
    "resolve_photos",
    "sample_factors",
    "write_imagefolder",
]

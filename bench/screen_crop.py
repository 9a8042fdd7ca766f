"""How much seeing the screen up close would help: the short-budget training of ``bench/crack_supervision.py`` on
whole photos and on the same photos cropped to the generator's own screen box before the letterbox.

    .venv/bin/python bench/screen_crop.py [--n-train 6000] [--epochs 4] [--margin 0.15]

A ceiling, not a design: a real crop stage would have to find the screen itself (and could miss it). Photos without
a visible screen (boxes, documents, surfaces, cables) stay whole. Both arms train without the crack-location loss,
whose cells are placed for the whole photo.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import model.data  # noqa: E402
from bench.short_runs import print_short_runs, short_run  # noqa: E402
from model.config import CLASSES, SIX_STAGES, NetworkConfig, Preprocessing  # noqa: E402
from model.crack_cells import CELL_PX  # noqa: E402
from model.preprocess import prepare  # noqa: E402
from model.synth import render_photo  # noqa: E402

MARGIN = 0.15  # of the screen box's width and height, on each side


def render_cropped(job: tuple[int, int, str, Preprocessing, bool]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``model.data``'s renderer, with the photo cropped to its screen box (plus ``MARGIN``) when it has one (no
    intact twins: the comparison trains without them)."""
    photo_seed, label, split, spec, _twin = job
    photo = render_photo(photo_seed, CLASSES[label], split=split)
    if photo.screen_box is not None:
        x0, y0, x1, y1 = photo.screen_box
        mx, my = MARGIN * (x1 - x0), MARGIN * (y1 - y0)
        width, height = photo.image.size
        box = (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(width, int(x1 + mx)), min(height, int(y1 + my)))
        photo = replace(photo, image=photo.image.crop(box), crack_mask=None, screen_box=None)
    cells = spec.size // CELL_PX
    return [(prepare(photo.encode(), spec).pixels, np.zeros((cells, cells), dtype=np.float32))]


def main() -> None:
    global MARGIN
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--margin", type=float, default=MARGIN)
    args = parser.parse_args()
    MARGIN = args.margin  # read by the forked renderers
    run = argparse.Namespace(**{**vars(args), "crack_weight": 0.0})
    rows = {}
    whole_photos = model.data._render_one
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows["whole photo"] = short_run(NetworkConfig(stages=SIX_STAGES), run, work / "whole", work / "cache-whole")
        model.data._render_one = render_cropped
        try:
            rows["cropped to the screen"] = short_run(
                NetworkConfig(stages=SIX_STAGES), run, work / "crop", work / "cache-crop"
            )
        finally:
            model.data._render_one = whole_photos
    print(f"\n{args.n_train} training photos x {args.epochs} epochs each, no crack-location loss; ", end="")
    print(f"test split of {args.n_test} photos; screen crops with a {MARGIN:.0%} margin from the generator's box\n")
    print_short_runs("input", rows)


if __name__ == "__main__":
    main()

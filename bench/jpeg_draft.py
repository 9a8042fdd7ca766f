"""One model, its test and shifted splits preprocessed under each JPEG draft rule (``Preprocessing.jpeg_draft``):
how much the rule the model was trained with matters to its answers.

    .venv/bin/python bench/jpeg_draft.py [--model artifacts/triage.onnx]

The generated photos are the same under both rules (448-640 px on the long side, where the rules differ most:
"square" decodes most of them whole, "letterbox" at half size); only their decoding differs. Prints accuracy per
rule and how many photos change their answer.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.data import synthetic_split  # noqa: E402
from model.preprocess import JPEG_DRAFTS, normalize  # noqa: E402
from service.inference.engine import TriageEngine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "triage.onnx")
    args = parser.parse_args()
    engine = TriageEngine(args.model, device="cpu")
    trained = engine.preprocessing.jpeg_draft
    print(f"\n{args.model.name}: trained with jpeg_draft={trained!r}\n")
    print("| split | photos | " + " | ".join(f"accuracy, {rule}" for rule in JPEG_DRAFTS) + " | answers changed |")
    print("|---|---:|" + "---:|" * (len(JPEG_DRAFTS) + 1))
    for split, n in (("test", 2000), ("shifted", 1000)):
        predictions = {}
        for rule in JPEG_DRAFTS:
            data = synthetic_split(split, n, replace(engine.preprocessing, jpeg_draft=rule))
            batches = (normalize(data.pixels[i : i + 250], engine.preprocessing) for i in range(0, n, 250))
            logits = np.concatenate([engine.infer(batch)["logits"] for batch in batches])
            predictions[rule] = (logits.argmax(1), data.labels)
        cells = [f"{(p == y).mean():.2%}" for p, y in predictions.values()]
        changed = int((predictions[JPEG_DRAFTS[0]][0] != predictions[JPEG_DRAFTS[1]][0]).sum())
        print(f"| {split} | {n} | " + " | ".join(cells) + f" | {changed} |")


if __name__ == "__main__":
    main()

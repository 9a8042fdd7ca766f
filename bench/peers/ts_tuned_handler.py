"""TorchServe's stock image classifier for a two-class model, decoding JPEGs at a DCT-reduced scale.

Pillow's ``Image.draft`` makes libjpeg decode at 1/2, 1/4 or 1/8 scale while the result still covers the stock
256-pixel resize, so a 12 MP phone photo costs a fraction of a full decode. The rest (resize 256, centre crop 224,
ImageNet normalisation, softmax, top classes) is the stock ``ImageClassifier``.
"""

import io

import torch
from PIL import Image
from ts.torch_handler.image_classifier import ImageClassifier

DRAFT_TO = 256  # the stock transforms' Resize(256)


class DraftDecodeClassifier(ImageClassifier):
    topk = 2

    def preprocess(self, data: list[dict]) -> torch.Tensor:
        images = []
        for row in data:
            raw = row.get("data") or row.get("body")
            image = Image.open(io.BytesIO(raw))
            if image.format == "JPEG":
                image.draft("RGB", (DRAFT_TO, DRAFT_TO))
            images.append(self.image_processing(image if image.mode == "RGB" else image.convert("RGB")))
        return torch.stack(images).to(self.device)

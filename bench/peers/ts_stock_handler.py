"""TorchServe's stock image classifier for a two-class model (the stock one asks for the top 5 classes)."""

from ts.torch_handler.image_classifier import ImageClassifier


class TopTwoClassifier(ImageClassifier):
    topk = 2

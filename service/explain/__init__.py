"""Explanations of one photo: feature maps, receptive-field boxes, the class-activation map, effective receptive
fields, the pictures drawn from them and the request's options; weights read from the ONNX file.

May import: NumPy, Pillow, ``model``'s torch-free modules (``numpy_net``, ``receptive_field``, ``preprocess``,
``config``) and ``service.inference.routing``; nothing that speaks HTTP.
"""

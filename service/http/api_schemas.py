"""The JSON schemas of what the service's endpoints answer (``components/schemas`` of its OpenAPI description).

``service.http.openapi`` puts them together with the operations; ``body_schemas`` is the one place the answer
fields are named for clients and API fuzzers, and ``tests/service/http/test_api_fuzz.py`` checks real answers against
them.
"""

from __future__ import annotations

from typing import Any

from model.config import CLASSES, NEEDS_REVIEW
from service.inference.routing import REVIEW_REASONS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def body_schemas(max_images: int) -> Schema:
    """The named schemas: probabilities, a routed photo or its error, the route answer (at most ``max_images``
    photos), the explanation answer, errors and the model information."""
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    decision = {
        "route": {"type": "string", "enum": [*CLASSES, NEEDS_REVIEW]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "probabilities": ref("Probabilities"),
    }
    reason = {
        "type": "string",
        "enum": list(REVIEW_REASONS),
        "description": "why the photo needs review: unsure (below the review threshold) or unfamiliar (unlike anything"
        " the model was trained on); absent when it was routed",
    }
    number_map = {"type": "object", "additionalProperties": {"type": "number"}}
    box = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
    cell = {  # a map cell: its receptive field and its own jump-sided square, in photo pixels
        "type": "object",
        "properties": {"box": box, "footprint": box},
        "required": ["box", "footprint"],
    }
    return {
        "Probabilities": {
            "type": "object",
            "properties": {name: probability for name in CLASSES},
            "required": list(CLASSES),
            "additionalProperties": False,
        },
        "RoutedPhoto": {
            "type": "object",
            "properties": {"file": {"type": "string"}, **decision, "reason": reason},
            "required": list(decision),
        },
        "PhotoError": {
            "type": "object",
            "properties": {
                "file": {"type": "string"},
                "error": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "integer", "enum": [413, 415, 422]},
                        "message": {"type": "string", "minLength": 1},
                    },
                    "required": ["status", "message"],
                },
            },
            "required": ["error"],
        },
        "Photo": {"oneOf": [ref("RoutedPhoto"), ref("PhotoError")]},
        "Model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"}},
            "required": ["name", "version", "sha256"],
        },
        "RouteAnswer": {
            "type": "object",
            "description": "The ticket's route (screen_damage if any photo is confidently damage) and each photo's",
            "properties": {
                **decision,
                "reason": reason,
                "images": {"type": "array", "items": ref("Photo"), "minItems": 1, "maxItems": max_images},
                "model": ref("Model"),
                "device": {"type": "string"},
                "provider": {"type": "string"},
                "request_id": {"type": "string"},
                "timings_ms": number_map,
            },
            "required": [*decision, "images", "model", "device"],
        },
        "ExplainAnswer": {
            "type": "object",
            "description": "The photo's route and, per layer, what the model computed (boxes in photo pixels)",
            "properties": {
                **decision,
                "reason": reason,
                "review_threshold": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "the confidence a photo needs for its class; below it the route is needs_review",
                },
                "file": {"type": "string"},
                "photo": {
                    "type": "object",
                    "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
                    "required": ["width", "height"],
                },
                "letterbox": {"type": "object"},
                "display": {"type": "object"},
                "layers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
                            "receptive_field": number_map,
                            "argmax": cell,
                            "channels": {"type": "array", "items": {"type": "object"}},
                        },
                        "required": ["name", "shape", "receptive_field", "argmax", "channels"],
                    },
                },
                "cam": {
                    "type": "object",
                    "properties": {
                        "class": {"type": "string", "enum": list(CLASSES)},
                        "pool": {"type": "string", "enum": ["max", "avg"]},
                        "overlay_png": {"type": "string"},
                        "peak": cell,
                    },
                    "required": ["class", "peak"],
                },
                "model": ref("Model"),
                "device": {"type": "string"},
                "provider": {"type": "string"},
                "request_id": {"type": "string"},
                "timings_ms": number_map,
            },
            "required": [*decision, "review_threshold", "photo", "layers", "cam", "model", "device"],
        },
        "Error": {
            "type": "object",
            "properties": {
                "detail": {"type": "string", "minLength": 1},
                "images": {"type": "array", "items": ref("Photo")},
                "request_id": {"type": "string"},
            },
            "required": ["detail"],
        },
        "ModelInfo": {
            "type": "object",
            "description": "The model card plus the execution provider and device the workers really run on",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "classes": {"type": "array", "items": {"type": "string"}},
                "provider": {"type": "string"},
                "device": {"type": "string"},
                "serving": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["name", "version", "classes", "provider", "device"],
        },
    }

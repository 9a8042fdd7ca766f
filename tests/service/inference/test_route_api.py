"""RouteAPI's hooks called directly, as LitServe's batched loop calls them: per-photo errors never leak into other
requests of the batch, and one batch is one model run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.http.uploads import TicketUpload, UploadedPhoto
from service.inference.intake import IntakeError
from service.inference.route_api import DecodedTicket, RouteAPI, RoutedTicket
from service.settings import Settings


@pytest.fixture(scope="module")
def api(random_model_dir: Path, metrics_dir: Path) -> Iterator[RouteAPI]:
    settings = Settings(model_path=random_model_dir / "triage.onnx", device="cpu", max_batch_size=4)
    route_api = RouteAPI(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("service.inference.engine_api.configure_logging", lambda level: None)
        route_api.setup("cpu")
    yield route_api


def upload(*photos: UploadedPhoto, request_id: str = "r") -> TicketUpload:
    return TicketUpload(request_id, time.time(), photos)


def run_batch(api: RouteAPI, uploads: list[TicketUpload]) -> list[tuple[int, dict[str, Any]]]:
    decoded = [api.decode_request(u) for u in uploads]
    outputs = api.unbatch(api.predict(api.batch(decoded)))
    responses = [api.encode_response(o) for o in outputs]
    return [(r.status_code, json.loads(r.body)) for r in responses]


def test_bad_requests_in_a_batch_do_not_fail_their_batch_mates(api: RouteAPI, photos: dict[str, bytes]) -> None:
    too_big = UploadedPhoto("big.jpg", error=IntakeError(413, "file is too big", "too_large"))
    results = run_batch(
        api,
        [
            upload(UploadedPhoto("a.jpg", photos["jpeg"]), request_id="good"),
            upload(UploadedPhoto("x.txt", b"text"), request_id="bad"),
            upload(
                UploadedPhoto("b.png", photos["png"]),
                too_big,
                UploadedPhoto("cut.webp", photos["webp"][:100]),
                request_id="mixed",
            ),
        ],
    )
    assert [status for status, _ in results] == [200, 415, 200]
    good, bad, mixed = (body for _, body in results)
    assert good["request_id"] == "good" and good["images"][0]["route"] == good["route"]
    assert bad["images"] == [
        {"file": "x.txt", "error": {"status": 415, "message": bad["images"][0]["error"]["message"]}}
    ]
    assert "route" in mixed["images"][0]
    assert mixed["images"][1] == {"file": "big.jpg", "error": {"status": 413, "message": "file is too big"}}
    assert mixed["images"][2]["error"]["status"] == 422


def test_one_model_run_per_batch(api: RouteAPI, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    infer = api.engine.infer

    def counting(batch: np.ndarray, outputs: tuple[str, ...] = ("logits",)) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        return infer(batch, outputs)

    monkeypatch.setattr(api.engine, "infer", counting)
    run_batch(
        api,
        [
            upload(UploadedPhoto("a", photos["jpeg"]), UploadedPhoto("b", photos["heic"])),
            upload(UploadedPhoto("c", b"")),
            upload(UploadedPhoto("d", photos["png16"])),
        ],
    )
    assert calls == [3]
    calls.clear()
    assert [status for status, _ in run_batch(api, [upload(UploadedPhoto("e", b"nope"))])] == [415]
    assert calls == []


def test_batched_results_equal_single_results(api: RouteAPI, photos: dict[str, bytes]) -> None:
    names = ["jpeg", "webp", "cmyk_jpeg"]
    together = run_batch(api, [upload(UploadedPhoto(n, photos[n])) for n in names])
    for name, (_, batched) in zip(names, together, strict=True):
        ((_, alone),) = run_batch(api, [upload(UploadedPhoto(name, photos[name]))])
        for key in ("screen_damage", "general_returns"):
            assert abs(batched["probabilities"][key] - alone["probabilities"][key]) < 1e-5


def test_unbatched_predict_for_batch_size_one(api: RouteAPI, photos: dict[str, bytes]) -> None:
    decoded = api.decode_request(upload(UploadedPhoto("a", photos["jpeg"])))
    assert isinstance(decoded, DecodedTicket)
    routed = api.predict(decoded)
    assert isinstance(routed, RoutedTicket) and routed.decisions[0] is not None


def test_a_decoded_ticket_holds_network_inputs_not_decoded_photos(api: RouteAPI, kit: Any) -> None:
    """A batch holds up to max_batch_size tickets of 10 photos until the model has run: each photo must weigh its
    network input, not its decoded pixels (ten 12-megapixel PNGs took a worker from 136 to 641 MB)."""
    big = kit.encode(kit.scene(400, 300).resize((4000, 3000)), "PNG")
    decoded = api.decode_request(upload(UploadedPhoto("a", big), UploadedPhoto("b", b"not a photo")))
    size = api.engine.preprocessing.size
    tensor, error = decoded.items
    assert isinstance(tensor, np.ndarray) and tensor.shape == (3, size, size) and tensor.base is None
    assert isinstance(error, IntakeError)


def test_response_has_the_contract_fields(api: RouteAPI, photos: dict[str, bytes]) -> None:
    ((status, body),) = run_batch(api, [upload(UploadedPhoto(None, photos["jpeg"]))])
    assert status == 200
    assert {"route", "confidence", "probabilities", "images", "model", "device"} <= set(body)
    assert set(body["model"]) == {"name", "version", "sha256"}
    photo = body["images"][0]
    assert set(photo) == {"route", "confidence", "probabilities"} | ({"reason"} if "reason" in photo else set())
    assert ("reason" in photo) == (photo["route"] == "needs_review")  # every review says why, nothing else does
    assert set(body["timings_ms"]) == {"queue", "decode", "preprocess", "inference"}

"""The service's configuration: one settings class, read from ``TRIAGE_*`` environment variables.

``service.server.main`` builds it once and passes it to everything that needs it (the HTTP layer, the inference
workers, the intake limits), so there is a single place that says what a deployment is configured to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.inference.intake import IntakeLimits

MIB = 1024 * 1024


SHIPPED_MODEL = Path("artifacts/triage.onnx")


def shipped_model_path() -> Path:
    """The shipped model: ``artifacts/triage.onnx`` in the working directory, else in the source tree this code runs
    from (so ``triage predict`` and ``triage explain`` work from any directory of a checkout)."""
    if SHIPPED_MODEL.exists():
        return SHIPPED_MODEL
    beside_code = Path(__file__).resolve().parents[1] / SHIPPED_MODEL
    return beside_code if beside_code.exists() else SHIPPED_MODEL


class Settings(BaseSettings):
    """Every knob of ``triage serve``; each field is read from ``TRIAGE_<FIELD>`` (e.g. ``TRIAGE_API_KEY``)."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    api_key: SecretStr | None = Field(None, description="when set, every /v1/* request must present it")
    max_bytes: int = Field(20 * MIB, ge=1, description="largest accepted photo file, in bytes")
    max_pixels: int = Field(50_000_000, ge=1, description="largest accepted photo, in decoded pixels")
    max_images: int = Field(10, ge=1, description="most photos in one ticket")
    max_batch_size: int = Field(8, ge=1, description="most requests one inference worker batches together")
    batch_timeout: float = Field(
        0.0,
        ge=0,
        description="seconds a worker waits for a batch to fill after its first request; 0 batches what is already "
        "queued, which under load is a full batch and when idle costs no latency (bench/service_load.py)",
    )
    workers_per_device: int = Field(
        2,
        ge=1,
        description="/v1/route inference processes per device; each decodes its own photos, so on a CPU one per core "
        "with ort_threads=1 serves more than one process with a thread pool (bench/service_load.py)",
    )
    explain_workers_per_device: int = Field(1, ge=1, description="/v1/explain inference processes per device")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model_path: Path = Field(default_factory=lambda: shipped_model_path())
    request_timeout: float = Field(30.0, gt=0, description="seconds before a request is answered with 504")
    ort_threads: int = Field(
        1, ge=0, description="ONNX Runtime intra-op threads per worker; 0 lets it choose (one per core of the machine)"
    )
    drain_timeout: float = Field(6.0, gt=0, le=8.5, description="seconds in-flight requests get after SIGTERM")
    worker_restarts: int = Field(
        3,
        ge=0,
        description="inference worker deaths restarted in place within worker_restart_window; one more exits with "
        "status 1 (0: exit on the first)",
    )
    worker_restart_window: float = Field(300.0, gt=0, description="seconds over which worker_restarts are counted")
    handoff_dir: Path | None = Field(
        Path("/dev/shm"),
        description="RAM-backed directory through which the HTTP processes hand photos to the inference workers "
        "(docs/BENCHMARKS.md); empty, missing or full: photos travel in LitServe's request queue",
    )
    packet_pipes: bool = Field(
        True,
        description="requests and answers between the HTTP and inference processes through packet-mode pipes "
        "(service/runtime/packet_pipes.py); false: through LitServe's queue manager",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_key", "handoff_dir", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()  # a key read from a file keeps its newline; no header value can carry one
        return None if value in ("", None) else value

    @field_validator("api_key")
    @classmethod
    def _key_fits_a_header(cls, value: SecretStr | None) -> SecretStr | None:
        # HTTP header values arrive as bytes read as Latin-1; a key outside printable ASCII could never match.
        if value is not None and not all(33 <= ord(c) <= 126 for c in value.get_secret_value()):
            raise ValueError("the API key must be printable ASCII without spaces (it travels in an HTTP header)")
        return value

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        if self.batch_timeout >= self.request_timeout:
            raise ValueError(f"batch_timeout ({self.batch_timeout}) must be below request_timeout")
        return self

    @property
    def intake_limits(self) -> IntakeLimits:
        return IntakeLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    @property
    def max_request_bytes(self) -> int:
        """The largest HTTP body: every photo at its limit in base64 wrapped at 76 characters with escaped CRLF line
        ends (4 more bytes per line) and escaped slashes (``\\/``, a 64th of the characters), plus room for the
        envelope."""
        encoded = self.max_bytes * 4 // 3 + 4
        return self.max_images * (encoded + encoded * 4 // 76 + encoded // 64 + 4) + MIB

"""The base of every LitAPI of the service: each inference worker holds one loaded, warmed-up ``TriageEngine``.

Subclasses (``RouteAPI`` for ``/v1/route``; ``/v1/explain`` likewise) implement the request hooks; this class
does what every worker needs: pick its GPU, load and verify the model, warm it up, report the execution provider
it really got (metric ``triage_model`` and the log), and leave shutdown to the supervisor when asked to.
"""

from __future__ import annotations

import logging
import signal
from abc import abstractmethod
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import FastAPI

from service.http.logs import configure_logging
from service.inference.devices import pin_worker_gpu
from service.inference.engine import TriageEngine
from service.metrics import metrics
from service.runtime.batching import PatientBatchedLoop
from service.runtime.parent_death import die_with_parent
from service.settings import Settings

log = logging.getLogger(__name__)


def milliseconds(seconds: float) -> float:
    """A duration as the answers' ``timings_ms`` give it: milliseconds, two decimals."""
    return round(seconds * 1000, 2)


class EngineAPI(ls.LitAPI):
    """A LitAPI whose workers each load ``settings.model_path`` on their device before reporting ready."""

    def __init__(
        self,
        settings: Settings,
        *,
        api_path: str,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        engine_device: str | None = None,
        gpus: tuple[str, ...] = (),
    ) -> None:
        loop = PatientBatchedLoop()  # for a batch size of 1 as well: it records the requests a worker holds
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path, loop=loop)
        self.settings = settings
        self.engine_device = engine_device or settings.device
        self.gpus = gpus
        # Set by the supervisor: workers then ignore SIGTERM/SIGINT sent to the whole process group and are
        # stopped by it once the HTTP servers have answered every request in flight.
        self.supervised = False
        self.supervisor_pid: int | None = None  # set by the supervisor: its workers die with it
        # Set by the supervisor when dead workers are restarted: where workers record the requests they hold.
        self.held_dir: Path | None = None
        self._engine: TriageEngine | None = None

    @property
    def engine(self) -> TriageEngine:
        if self._engine is None:
            raise RuntimeError(f"{type(self).__name__} has no engine outside an inference worker")
        return self._engine

    async def authorize(self) -> None:
        """LitServe's per-endpoint auth dependency, a no-op: ``RequestContextMiddleware`` has checked the API key before
        a request gets here. LitServe's default is a plain function, which FastAPI runs in its thread pool for every
        request (a thread hop in about a sixth of an HTTP process's samples under phone-photo load,
        ``docs/BENCHMARKS.md``); a coroutine runs on the event loop."""

    # LitServe's batched loop: ``batch`` the decoded requests, ``predict`` once, ``unbatch`` the answers. Both APIs
    # keep decoded requests as they are and run them in one model call (``run_batch``).
    def batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def predict(self, x: Any) -> Any:
        if isinstance(x, list):
            return self.run_batch(x)
        return self.run_batch([x])[0]  # one request, unbatched (a direct call; LitServe's single-request loop)

    def unbatch(self, output: list[Any]) -> list[Any]:
        return list(output)

    @abstractmethod
    def run_batch(self, decoded: list[Any]) -> list[Any]:
        """One model run over every decoded request of a batch; an answer per request, in order."""

    def configure_app(self, app: FastAPI) -> None:
        """Called once on the HTTP app before serving: what the HTTP processes need to know about this API."""

    def setup(self, device: str) -> None:
        if self.supervised:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.supervisor_pid is not None:
            die_with_parent(self.supervisor_pid)
        configure_logging(self.settings.log_level)
        pin_worker_gpu(device, self.gpus)
        engine = TriageEngine(self.settings.model_path, device=self.engine_device, threads=self.settings.ort_threads)
        engine.warm_up(sorted({1, self.max_batch_size}))
        self._engine = engine
        card = engine.card
        metrics().model.labels(
            name=str(card["name"]),
            version=str(card["version"]),
            sha256=engine.info.model_sha256,
            provider=engine.info.provider,
            device=engine.info.device,
        ).set(1)
        log.info(
            "inference worker ready",
            extra={"api": self.api_path, "provider": engine.info.provider, "device": engine.info.device},
        )

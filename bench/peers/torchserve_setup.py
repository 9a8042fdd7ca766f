"""TorchServe set-ups for bench/peer_servers.py: a TorchScript trace packed into one model store per set-up.

* stock: the stock ``image_classifier`` handler with ``topk = 2`` (ts_stock_handler.py); TorchServe's defaults for
  everything else (workers = cores, batch 1, PyTorch's own thread count, INFO/DEBUG logging, system metrics).
* tuned: ``OMP_NUM_THREADS=1`` (set by the caller), two single-threaded workers (one per core), batches of up to 4
  with a 5 ms delay, a handler decoding JPEGs with ``Image.draft`` (ts_tuned_handler.py), asynchronous logging at
  WARN with the access log kept, no system metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
FLAVORS = ("stock", "tuned")
TUNED_MODEL_CONFIG = {"minWorkers": 2, "maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 5, "responseTimeout": 120}
TUNED_LOG4J = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="%d{ISO8601} %c - %m%n"/></Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="info"/>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def properties(ports: tuple[int, int, int], store: Path, flavor: str) -> str:
    """``config.properties``: loopback inference, management and metrics addresses, the model store."""
    names = ("inference_address", "management_address", "metrics_address")
    lines = [f"{name}=http://127.0.0.1:{port}" for name, port in zip(names, ports, strict=True)]
    lines += [f"model_store={store}", "disable_token_authorization=true"]
    if flavor == "tuned":
        lines += ["async_logging=true", "disable_system_metrics=true"]
    return "\n".join(lines) + "\n"


def command(home: Path, flavor: str) -> list[str]:
    """``torchserve`` in the foreground (it then waits for its Java frontend), serving ``triage`` from ``home``."""
    cmd = [str(BIN / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth"]
    cmd += ["--ts-config", str(home / "config.properties"), "--model-store", str(home / "store")]
    cmd += ["--models", "triage=triage.mar"]
    return cmd + (["--log-config", str(home / "log4j2.xml")] if flavor == "tuned" else [])


def trace(net: nn.Module, path: Path) -> None:
    """TorchScript by tracing at TorchServe's 224x224 input (the network pools globally, so any size runs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        torch.jit.trace(net, torch.zeros(1, 3, 224, 224)).save(str(path))


def package(net: nn.Module, classes: tuple[str, ...], tmp: Path) -> Path:
    """Trace ``net``, lay out ``tmp/ts-<flavor>/`` (store with triage.mar, log config); returns the trace."""
    trace(net, pt := tmp / "triage.pt")
    (labels := tmp / "index_to_name.json").write_text(json.dumps({str(i): c for i, c in enumerate(classes)}))
    (yaml := tmp / "model-config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in TUNED_MODEL_CONFIG.items()))
    for flavor in FLAVORS:
        (store := (home := tmp / f"ts-{flavor}") / "store").mkdir(parents=True)
        (home / "log4j2.xml").write_text(TUNED_LOG4J)
        cmd = [str(BIN / "torch-model-archiver"), "--model-name", "triage", "--version", "1.0"]
        cmd += ["--serialized-file", str(pt), "--handler", str(HERE / f"ts_{flavor}_handler.py")]
        cmd += ["--extra-files", str(labels), "--export-path", str(store)]
        subprocess.run(cmd + (["--config-file", str(yaml)] if flavor == "tuned" else []), check=True)
    return pt

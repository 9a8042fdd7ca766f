"""A training step's cost with glibc's default allocator thresholds and with ``model.allocator.reuse_freed_memory``.

    .venv/bin/python bench/train_step.py [--steps 30] [--rounds 2]

Each set-up runs in a fresh process (the thresholds are per process and cannot be unset), alternating, ``--rounds``
times: the default network, batches of 64 generated photos from ``model.train.training_batches``, bf16 autocast
where the CPU has it, AdamW. Reports wall milliseconds per step after two warm-up steps, and the user and system CPU
seconds and minor page faults of the measured steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(reuse: bool, steps: int) -> dict[str, float]:
    """``steps`` training steps in this process; ``reuse`` applies the allocator thresholds first."""
    import numpy as np
    import torch

    from model.allocator import reuse_freed_memory
    from model.config import NetworkConfig
    from model.data import synthetic_split
    from model.network import build_network
    from model.train import training_batches
    from model.train_hardware import training_precision

    if reuse:
        reuse_freed_memory()
    config = NetworkConfig()
    spec = config.preprocessing
    data = synthetic_split("train", 64 * 4, spec, seed=7)
    net = build_network(config, seed=0).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    bf16 = training_precision("auto", torch.device("cpu")) == "bf16"
    generator = torch.Generator().manual_seed(0)
    done, started, before = 0, 0.0, None
    while done < steps + 2:
        for x, y, _ in training_batches(data, spec, 64, generator):
            if done == 2:
                started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(x.contiguous(memory_format=torch.channels_last))
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
            optimizer.step()
            done += 1
            if done == steps + 2:
                break
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert before is not None and np.isfinite(float(logits.float().sum()))
    return {
        "ms_per_step": 1000 * (time.perf_counter() - started) / steps,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "minor_faults": after.ru_minflt - before.ru_minflt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("default", "reuse"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "reuse", args.steps)))
        return
    print(f"\n{args.steps} steps of batch 64 per run, after 2 warm-up steps\n")
    print("| allocator | round | ms per step | user s | system s | minor page faults |\n|---|---:|---:|---:|---:|---:|")
    for round_ in range(1, args.rounds + 1):
        for setup in ("default", "reuse"):
            command = [sys.executable, __file__, "--child", setup, "--steps", str(args.steps)]
            r = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            name = "glibc defaults" if setup == "default" else "reuse_freed_memory"
            print(
                f"| {name} | {round_} | {r['ms_per_step']:.0f} | {r['user_s']:.1f} | {r['sys_s']:.1f} "
                f"| {r['minor_faults']:,} |"
            )


if __name__ == "__main__":
    main()

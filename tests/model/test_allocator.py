"""``reuse_freed_memory`` sets glibc's thresholds where it can and leaves other C libraries alone."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from model import allocator


def test_glibc_takes_the_thresholds_in_a_fresh_process() -> None:
    assert platform.libc_ver()[0] == "glibc"  # the service's images and CI run on glibc
    code = "from model.allocator import reuse_freed_memory; print(reuse_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == str({"mmap_threshold": allocator.MMAP_THRESHOLD, "trim_threshold": allocator.TRIM_THRESHOLD})


def test_a_c_library_without_mallopt_or_refusing_it_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        def __init__(self, name: str | None) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert allocator.reuse_freed_memory() is None

    class Refusing:
        def __init__(self, name: str | None) -> None:
            self.mallopt = lambda option, value: 0

    monkeypatch.setattr(ctypes, "CDLL", Refusing)
    assert allocator.reuse_freed_memory() is None

"""A local stand-in for the CPU image's Python base, for building the image where no container registry is reachable.

The Dockerfile's CPU target starts from ``python:3.11-slim``. Without a registry, this module makes an equivalent base
from Debian's packages alone: ``debootstrap --variant=minbase`` of bookworm with its CPython 3.11, pip, venv and the CA
certificates, imported into podman as ``localhost/triage-py311-base:<recipe hash>``. The tag is a hash of the recipe, so
the base is built once and kept while the recipe is unchanged; changing the recipe builds a new one.

    python deploy/standin_base.py          # print the base's name, building it first if podman lacks it
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("TRIAGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "python3-venv", "ca-certificates")
REPOSITORY = "localhost/triage-py311-base"
# What python:3.11-slim sets: its tools on PATH, UTF-8 text, no buffering surprises.
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


def recipe_tag() -> str:
    """The base's tag: 12 hex digits of the sha256 of the recipe (suite, packages, image settings, the steps)."""
    recipe = repr((SUITE, PACKAGES, IMAGE_CHANGES)) + inspect.getsource(_bootstrap)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def image_name() -> str:
    return f"{REPOSITORY}:{recipe_tag()}"


def _podman(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], check=True, text=True, **kwargs)  # type: ignore[call-overload]


def exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def _bootstrap(rootfs: Path) -> None:
    """Debian's minimal system with Python 3.11 in ``rootfs``, arranged like the official Python image."""
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # The image's Python belongs to the image: pip may install into it (the Dockerfile's wheel stage does).
    for marker in (rootfs / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for link in ("python", "python3"):
        target = rootfs / "usr/local/bin" / link
        target.unlink(missing_ok=True)
        target.symlink_to("/usr/bin/python3.11")
    # Package lists and caches are not needed to run anything.
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / folder).glob("*"):
            if entry.is_file():
                entry.unlink()


def build(name: str) -> None:
    """debootstrap a root file system and import it into podman as ``name``."""
    for tool in ("debootstrap", "podman"):
        if shutil.which(tool) is None:
            raise SystemExit(f"standin_base: {tool} is not installed (apt-get install {tool})")
    with tempfile.TemporaryDirectory(prefix="triage-base-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _bootstrap(rootfs)
        changes = [arg for change in IMAGE_CHANGES for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            _podman("import", "--quiet", *changes, "-", name, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0:
                raise SystemExit("standin_base: tar of the root file system failed")


def ensure() -> str:
    """The stand-in base's name; built first when podman does not have it yet."""
    os.environ.setdefault("CONTAINERS_CONF", str(Path(__file__).with_name("podman") / "containers.conf"))
    name = image_name()
    if exists(name):
        print(f"stand-in base {name}: present", file=sys.stderr)
        return name
    started = time.monotonic()
    print(f"stand-in base {name}: building with debootstrap ({SUITE}, {MIRROR})", file=sys.stderr)
    build(name)
    print(f"stand-in base {name}: built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return name


if __name__ == "__main__":
    print(ensure())

"""The Dockerfile's promises, read from the file itself: two final targets on pinned bases that match the installed
onnxruntime-gpu, the serving lock and nothing else installed, no build tools or torch in the images, a non-root user,
exec-form CMD, a HEALTHCHECK on /health, and a build context that holds only what the images need."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.markers import default_environment

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        elif not stages and word == "ARG":
            key, _, value = rest.partition("=")
            global_args[key] = value
        elif stages:
            stages[-1].instructions.append((word, rest))
    # Defaults may refer to earlier ones (PYTHON_IMAGE uses PYTHON_VERSION).
    for key, value in global_args.items():
        global_args[key] = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], value)
    return global_args, stages


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def root_image(stage: Stage, args: dict[str, str], stages: dict[str, Stage]) -> str:
    """The image a stage is built on, following stages built on stages."""
    image = resolve(stage.base, args)
    return root_image(stages[image], args, stages) if image in stages else image


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    args, stages = parse()
    return args, {s.name: s for s in stages}


def test_two_final_targets_cpu_and_gpu(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    assert list(stages)[-2:] == ["cpu", "gpu"]


def test_every_base_image_is_a_stage_or_an_exactly_tagged_image(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    """What the inline CKV_DOCKER_7 suppression relies on: checkov cannot resolve the ARG images, this test does."""
    args, stages = dockerfile
    for stage in stages.values():
        image = resolve(stage.base, args)
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{image}: tag is not an exact release"


def test_python_is_the_version_the_lock_was_made_for(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    major_minor = ".".join(args["PYTHON_VERSION"].split(".")[:2])
    assert major_minor == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "CPython 3.11" in (ROOT / "requirements" / "serving.lock").read_text()
    assert resolve(stages["cpu"].base, args) == f"python:{args['PYTHON_VERSION']}-slim-trixie"


def test_gpu_python_is_the_cuda_images_own_from_its_package_archive(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    """Nothing but base images and package registries: no interpreter downloaded from anywhere else."""
    _, stages = dockerfile
    assert stages["gpu"].base == stages["venv-gpu"].base == "gpu-python"
    assert stages["gpu-python"].base == "${CUDA_IMAGE}"
    (install,) = stages["gpu-python"].args("RUN")
    assert "apt-get install -y --no-install-recommends python3 python3-venv" in install
    assert "rm -rf /var/lib/apt/lists/*" in install
    text = DOCKERFILE.read_text()
    for fetcher in ("uv python install", "curl ", "wget ", "ADD "):
        assert fetcher not in text, fetcher


def test_the_lock_serves_the_gpu_images_python_too(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], serving_lock: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ubuntu 24.04's CPython 3.12 needs exactly the same closure as 3.11: the markers of every requirement in the
    serving closure, read from the installed metadata, give the same pins under 3.12."""
    args, stages = dockerfile
    assert root_image(stages["gpu"], args, stages).endswith("-ubuntu24.04")
    environment = dict(default_environment())
    environment.update(python_version="3.12", python_full_version="3.12.3")
    monkeypatch.setattr(serving_lock, "default_environment", lambda: environment)
    under_312 = serving_lock.resolve(serving_lock.base_requirements())
    assert under_312 == serving_lock.read_lock()


def test_gpu_base_matches_the_installed_onnxruntime_gpu(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    from onnxruntime.capi import build_and_package_info

    args, stages = dockerfile
    image = root_image(stages["gpu"], args, stages)
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", image)
    assert match, image
    built_for = build_and_package_info.cuda_version.split(".")
    assert list(match.groups()) == built_for[:2], f"{image} vs onnxruntime built for CUDA {built_for}"
    # cuDNN: the wheel's own requirement names the major version and the CUDA major it is built against.
    requires = metadata.requires("onnxruntime-gpu") or []
    cudnn = [r for r in requires if r.startswith("nvidia-cudnn-cu")]
    assert cudnn and cudnn[0].startswith(f"nvidia-cudnn-cu{built_for[0]}~=9."), cudnn
    assert "cuDNN 9" in DOCKERFILE.read_text()
    lock = (ROOT / "requirements" / "serving.lock").read_text()
    assert f"onnxruntime-gpu=={metadata.version('onnxruntime-gpu')}" in lock.splitlines()


def test_images_install_exactly_the_lock(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    for name in ("venv-cpu", "venv-gpu"):
        runs = " ".join(stages[name].args("RUN"))
        assert "--no-deps --only-binary=:all:" in runs and "-r requirements/serving.lock" in runs
        assert "--no-deps --no-index /wheels/*.whl" in runs
        assert "pip --python /opt/venv/bin/python check" in runs
        assert "deploy/serving_lock.py --check --exact" in runs
        assert "--without-pip" in runs
        # Trimmed only after both checks, for its own target (the CPU image drops the CUDA providers).
        assert stages[name].args("RUN")[-1] == f"sh deploy/trim_venv.sh /opt/venv {name.removeprefix('venv-')}"
    text = DOCKERFILE.read_text().lower()
    assert "torch" not in text.replace("no torch", "")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_final_stage_is_minimal_unprivileged_and_signal_safe(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], target: str
) -> None:
    _, stages = dockerfile
    stage = stages[target]
    allowed = {"LABEL", "RUN", "COPY", "WORKDIR", "ENV", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}
    assert {word for word, _ in stage.instructions} <= allowed
    # The only command run in a final stage creates the user: no package manager, no compiler, no pip.
    for run in stage.args("RUN"):
        assert re.fullmatch(r"groupadd .* && useradd .*", run), run
    # From the build stages, only the virtual environment (and the GPU image's Python) of this target.
    copied = [rest.split()[:2] for rest in stage.args("COPY") if rest.startswith("--from=")]
    assert copied and all(source == f"--from=venv-{target}" for source, _ in copied)
    assert {path for _, path in copied} <= {"/opt/venv", "/opt/python"}
    user = stage.args("USER")
    assert len(user) == 1 and re.fullmatch(r"[1-9]\d{4,}:[1-9]\d{4,}", user[0])
    # Exec form: `triage serve` is PID 1 and receives SIGTERM itself; no shell, no ENTRYPOINT wrapper.
    assert [json.loads(c) for c in stage.args("CMD")] == [["triage", "serve"]]
    assert "ENTRYPOINT" not in {word for word, _ in stage.instructions}
    (health,) = stage.args("HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert "/health" in command and json.loads(command)[0] == "python"
    assert "--start-period=" in options
    env = " ".join(stage.args("ENV"))
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves ``path`` out (later rules win; a rule on a folder covers its content)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
        parts = Path(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if rule.lstrip("!").startswith("**/"):
            candidates += [p for p in parts]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            excluded = not negate
    return excluded


def test_build_context_holds_what_the_images_copy_and_nothing_private(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _, stages = dockerfile
    sources = []
    for stage in stages.values():
        for copy in stage.args("COPY"):
            if not copy.startswith("--from="):
                sources += copy.split()[:-1]
    assert "artifacts/triage.onnx" in sources and "requirements/serving.lock" in sources
    for source in sources:
        assert not dockerignore_excludes(source.rstrip("/") + ("/x.py" if source.endswith("/") else "")), source
    for private in (".venv/bin/python", ".git/config", ".env", "tests/conftest.py", "artifacts/checkpoint.pt"):
        assert dockerignore_excludes(private), private
    assert dockerignore_excludes("service/__pycache__/server.cpython-311.pyc")

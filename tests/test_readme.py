"""The README's promises, executed: the two set-up commands, every `triage` command line, the sample photos routed
in-process and through a real `triage serve` with the README's own curl command, and the shipped model's figures."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from model.card import CARD_NAME, read_card
from tests.service.serve_process import HTTP_TIMEOUT, serving
from triage_cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ARTIFACTS = ROOT / "artifacts"


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def make_recipe(target: str) -> list[str]:
    """The commands ``make TARGET`` would run (dry run: nothing is installed or started)."""
    argv = ["make", "--no-print-directory", "-n", "-W", "pyproject.toml", target]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.strip()]


def triage_argv(line: str) -> list[str] | None:
    """The arguments after ``triage`` in a shell line (``.venv/bin/triage x`` or ``triage x``), else None."""
    found = re.search(r"(?:^|/)triage (.+)$", line)
    return shlex.split(found.group(1)) if found else None


def test_quick_start_is_exactly_two_make_commands_that_exist() -> None:
    quick = code_blocks("sh")[0].split()
    assert quick == ["make", "serve", "make", "test"]
    serve, test = make_recipe("serve"), make_recipe("test")
    assert serve[-1] == ".venv/bin/triage serve"
    assert not any("torch" in line for line in serve), "the serving set-up must not install torch"
    assert any("pytest" in line for line in test) and any("ruff check" in line for line in test)
    ci_commands = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if not ln.startswith("#")]
    assert ci_commands.count("make test") == 1


def test_every_triage_command_line_in_the_readme_parses() -> None:
    commands = [argv for block in code_blocks("sh") for ln in block.splitlines() if (argv := triage_argv(ln))]
    assert {argv[0] for argv in commands} >= {"predict", "train", "export", "serve"}
    parser = build_parser()
    for argv in commands:
        parser.parse_args([a for a in argv if "*" not in a] + (["samples/x.jpg"] if argv[0] == "predict" else []))


def sample_files() -> list[Path]:
    files = sorted((ROOT / "samples").glob("*/*.jpg"))
    assert len(files) >= 4 and {f.parent.name for f in files} == {"screen_damage", "general_returns"}
    return files


def test_readme_predict_routes_the_samples_to_their_folders() -> None:
    (line,) = [ln for block in code_blocks("sh") for ln in block.splitlines() if "triage predict" in ln]
    argv = [a for a in shlex.split(line)[1:] if "*" not in a] + [str(f) for f in sample_files()]
    out = subprocess.run([sys.executable, "-m", "triage_cli", *argv], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    results = [json.loads(row) for row in out.stdout.splitlines()]
    assert len(results) == len(sample_files())
    for result in results:
        folder = Path(result["file"]).parent.name
        assert max(result["probabilities"], key=result["probabilities"].get) == folder, result
        assert result["route"] in (folder, "needs_review"), result
        assert set(result["timings_ms"]) >= {"decode", "preprocess", "inference", "total"}


def test_readme_curl_routes_a_sample_through_a_real_service(tmp_path: Path) -> None:
    (curl,) = [ln for block in code_blocks("sh") for ln in block.splitlines() if ln.startswith("curl")]
    with serving(ARTIFACTS / "triage.onnx", tmp_path / "serve.log") as served:
        command = shlex.split(curl.replace("http://127.0.0.1:8000", served.url))
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=HTTP_TIMEOUT)
    answer = json.loads(out.stdout)
    photo = Path(command[command.index("-F") + 1].split("@", 1)[1])
    assert answer["route"] in (photo.parent.name, "needs_review")
    assert max(answer["probabilities"], key=answer["probabilities"].get) == photo.parent.name
    card = read_card(ARTIFACTS / CARD_NAME)
    assert answer["model"]["sha256"] == card["artifacts"]["triage.onnx"]["sha256"]
    assert answer["device"] == "cpu" or answer["device"].startswith("cuda")
    # The answer the README shows is this one (numbers shortened as it says), with the card's review threshold.
    (shown,) = [block for block in code_blocks("json") if '"route"' in block]
    assert f'"route": "{answer["route"]}", "confidence": {answer["confidence"]:.3f}' in shown
    assert f'"sha256": "{answer["model"]["sha256"][:8]}..."' in shown
    threshold = card["calibration"]["review_threshold"]
    assert f"({answer['confidence']:.3f}, above the review threshold of {threshold:.3f})" in README


@pytest.mark.parametrize("split", ["test", "shifted"])
def test_readme_model_figures_are_the_cards(split: str) -> None:
    metrics = read_card(ARTIFACTS / CARD_NAME)["metrics"][split]
    row = next(ln for ln in README.splitlines() if ln.startswith(f"| {split} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == str(metrics["n"])
    assert cells[2] == f"{metrics['accuracy']:.2%}"
    recalls = {c: metrics["per_class"][c]["recall"] for c in metrics["per_class"]}
    assert cells[3] == f"{recalls['screen_damage']:.2%}" and cells[4] == f"{recalls['general_returns']:.2%}"
    assert cells[5] == f"{metrics['ece']:.4f}"


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_readme_quantisation_figures_are_the_cards(variant: str) -> None:
    measured = read_card(ARTIFACTS / CARD_NAME)["quantization"]["results"][variant]
    row = next(ln for ln in README.splitlines() if ln.startswith(f"| {variant} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == [
        f"{measured['accuracy']:.2%}",
        f"{measured['batch1_ms']:.2f}",
        f"{measured['batch8_ms']:.2f}",
        f"{measured['bytes'] / 1e6:.2f}",
    ]


def test_readme_and_deploy_name_every_setting() -> None:
    from service.settings import Settings

    deploy = (ROOT / "docs" / "DEPLOY.md").read_text()
    for name in Settings.model_fields:
        variable = f"TRIAGE_{name.upper()}"
        assert f"`{variable}`" in README and f"`{variable}`" in deploy, variable

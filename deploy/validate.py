"""Validate the Dockerfile and the Kubernetes manifests without a Docker engine or a cluster.

    python deploy/validate.py          # every check below; prints counts; exit 1 on any finding

* hadolint on the Dockerfile: no finding at all (its default threshold, ``info``, and up).
* Every deployable variant is rendered with ``kubectl kustomize``: each overlay alone, and each overlay with the
  optional components (KEDA autoscaling, ServiceMonitor, PrometheusRule) added as the docs describe.
* ``kubernetes-validate --strict`` on every rendered object of a built-in kind, for its newest Kubernetes and for
  1.30; custom resources (ScaledObject, ServiceMonitor, PrometheusRule) against models generated from their CRDs,
  strictly (an unknown or misspelled field is an error), and every PromQL expression in them is parsed.
* checkov on the Dockerfile and on every rendering: no failed check; each suppression is written next to what it
  suppresses, with its reason.

The tools come from the ``deploy`` extra (``pip install -c requirements/serving.lock -e ".[deploy]"``); tests/deploy
runs all of this in ``make test``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
NAMESPACE = "ticket-triage"
OVERLAYS = ("cpu", "gpu")
COMPONENTS = ("keda", "servicemonitor", "prometheusrule")
# The oldest Kubernetes the manifests support (the preStop sleep action is on by default from 1.30).
MIN_KUBERNETES = "1.30.0"
# checkov runs at most this long per call (it takes seconds; the bound keeps a hung run from stalling CI).
CHECKOV_TIMEOUT_S = 300


class ValidationFailed(RuntimeError):
    """A validator reported a finding, or could not run."""


@dataclass(frozen=True)
class Target:
    """One deployable variant: an overlay, optionally with components added to it."""

    overlay: str
    components: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "+".join((self.overlay, *self.components))


TARGETS: tuple[Target, ...] = (
    *(Target(o) for o in OVERLAYS),
    *(Target(o, COMPONENTS) for o in OVERLAYS),
)


def tool(name: str) -> str:
    """The executable ``name``: from this interpreter's environment first (the ``deploy`` extra), else PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ValidationFailed(f"{name} is not installed; pip install -c requirements/serving.lock -e '.[deploy]'")
    return found


def _run(args: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise ValidationFailed(f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
def overlay_with_components(target: Target, directory: Path) -> Path:
    """A copy of deploy/ in ``directory`` whose ``target.overlay`` lists ``target.components``, exactly as
    docs/DEPLOY.md tells users to add them; returns that overlay's directory."""
    copy = directory / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"), dirs_exist_ok=True)
    overlay = copy / "overlays" / target.overlay
    spec = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    spec["components"] = [*spec.get("components", []), *(f"../../components/{c}" for c in target.components)]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return overlay


def render(target: Target, workdir: Path | None = None) -> str:
    """The manifests ``kubectl kustomize`` renders for ``target``, as one multi-document YAML string."""
    if not target.components:
        return _run([tool("kubectl"), "kustomize", str(DEPLOY / "overlays" / target.overlay)]).stdout
    with tempfile.TemporaryDirectory(prefix="triage-render-") as tmp:
        overlay = overlay_with_components(target, Path(workdir or tmp) / target.name.replace("+", "_"))
        return _run([tool("kubectl"), "kustomize", str(overlay)]).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render_all(directory: Path, targets: Iterable[Target] = TARGETS) -> dict[str, Path]:
    """Render every target into ``directory/<name>.yaml``; returns name -> file."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for target in targets:
        path = directory / f"{target.name.replace('+', '_')}.yaml"  # checkov skips names with a "+"
        path.write_text(render(target, directory / "kustomizations"))
        files[target.name] = path
    return files


# ----------------------------------------------------------------------------------------------------------------
# hadolint
# ----------------------------------------------------------------------------------------------------------------
def hadolint(dockerfile: Path = DOCKERFILE) -> list[dict[str, Any]]:
    """hadolint's findings for ``dockerfile`` (empty when clean)."""
    proc = _run([tool("hadolint"), "--no-color", "--format", "json", str(dockerfile)], check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("["):
        raise ValidationFailed(f"hadolint could not check {dockerfile}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def hadolint_version() -> str:
    return _run([tool("hadolint"), "--version"]).stdout.strip()


# ----------------------------------------------------------------------------------------------------------------
# Schemas: kubernetes-validate --strict for built-in kinds, CRD models for custom resources
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SchemaReport:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    custom: list[str] = field(default_factory=list)
    expressions: int = 0


def kubernetes_validate(files: Iterable[Path], version: str | None = None) -> tuple[int, list[str], str]:
    """Run ``kubernetes-validate --strict`` (against ``version``, default its newest); returns (return code, lines
    that are not INFO passes, whole output)."""
    pinned = ["--kubernetes-version", version] if version else []
    proc = _run([tool("kubernetes-validate"), "--strict", *pinned, *map(str, files)], check=False)
    out = proc.stdout + proc.stderr
    other = [line for line in out.splitlines() if line.strip() and not line.startswith("INFO ")]
    return proc.returncode, other, out


def _custom_models() -> dict[tuple[str, str], type]:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

    return {
        ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
    }


def is_custom(doc: dict[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in _custom_models()


def _differences(want: Any, got: Any, path: str = "") -> Iterator[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want.keys() | got.keys():
            if key not in got:
                yield f"{path}.{key}: not a field of this kind (or misspelled)"
            elif key not in want:
                yield f"{path}.{key}: added by the model"
            else:
                yield from _differences(want[key], got[key], f"{path}.{key}")
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            yield from _differences(a, b, f"{path}[{i}]")
    elif want != got:
        yield f"{path}: {want!r} read as {got!r}"


def validate_custom(doc: dict[str, Any]) -> list[str]:
    """Problems of a custom resource against its CRD model: wrong types, unknown or misspelled fields."""
    model = _custom_models()[(doc["apiVersion"], doc["kind"])]
    try:
        parsed = model.model_validate(doc)
    except ValueError as exc:  # pydantic's ValidationError
        return [str(exc)]
    # The models ignore unknown fields; whatever does not survive the round trip was not understood.
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return list(_differences(doc, dumped))


def promql_expressions(doc: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a ScaledObject's prometheus triggers or a PrometheusRule's rules."""
    if doc.get("kind") == "ScaledObject":
        return [t["metadata"]["query"] for t in doc["spec"]["triggers"] if t["type"] == "prometheus"]
    if doc.get("kind") == "PrometheusRule":
        return [str(r["expr"]) for g in doc["spec"]["groups"] for r in g["rules"]]
    return []


def parse_promql(expression: str) -> Any:
    import promql_parser

    return promql_parser.parse(expression)


def selectors(expression: str) -> list[tuple[str, dict[str, str]]]:
    """The metric name and label matchers of every series selector in ``expression``."""
    import promql_parser

    found: list[tuple[str, dict[str, str]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name or "", {m.name: m.value for m in node.matchers.matchers}))
        return True

    promql_parser.walk(parse_promql(expression), visit)
    return found


def check_schemas(files: dict[str, Path]) -> SchemaReport:
    report = SchemaReport()
    code, other, out = kubernetes_validate(files.values())
    # The oldest Kubernetes docs/DEPLOY.md supports, too.
    old_code, old_other, old_out = kubernetes_validate(files.values(), MIN_KUBERNETES)
    other += [f"(Kubernetes {MIN_KUBERNETES}) {line}" for line in old_other]
    code = code or old_code
    report.passed = [line for line in out.splitlines() if line.startswith("INFO ") and " passed " in line]
    for name, path in files.items():
        for doc in documents(path.read_text()):
            if not is_custom(doc):
                continue
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
            report.custom.append(where)
            report.failed += [f"{where}: {p}" for p in validate_custom(doc)]
            for expression in promql_expressions(doc):
                report.expressions += 1
                try:
                    parse_promql(expression)
                except ValueError as exc:
                    report.failed.append(f"{where}: PromQL {expression!r}: {exc}")
    # kubernetes-validate has no schema for custom kinds and says so (checked above); any other line is a failure.
    report.failed += [line for line in other if not _custom_warning_ok(line)]
    if code != 0 and not report.failed:
        report.failed.append(f"kubernetes-validate exited with {code}:\n{out}\n{old_out}")
    return report


def _custom_warning_ok(line: str) -> bool:
    return any(f"kind {kind} with api version {api}" in line for api, kind in _custom_models())


# ----------------------------------------------------------------------------------------------------------------
# checkov
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckovReport:
    framework: str
    summary: dict[str, Any]
    failed: list[str]
    skipped: list[tuple[str, str, str]]  # (check id, resource, justification)


def checkov(framework: str, paths: Iterable[Path], *, directory: Path | None = None) -> CheckovReport:
    """One checkov run (offline: ``--skip-download``) over ``paths`` (or ``directory``) for ``framework``."""
    args = [tool("checkov"), "--framework", framework, "--skip-download", "--output", "json", "--compact"]
    if directory is not None:
        args += ["--directory", str(directory)]
    for path in paths:
        args += ["--file", str(path)]
    proc = _run(args, timeout=CHECKOV_TIMEOUT_S, check=False)
    try:
        raw = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"checkov produced no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}") from exc
    reports = [r for r in (raw if isinstance(raw, list) else [raw]) if r.get("check_type") == framework]
    if not reports or not reports[0]["summary"]["resource_count"]:
        raise ValidationFailed(f"checkov scanned nothing for {framework}: {proc.stdout[:2000]}")
    results = reports[0]["results"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})" for c in results["failed_checks"]
    ]
    skipped = [
        (c["check_id"], c["resource"], (c["check_result"].get("suppress_comment") or "").strip())
        for c in results["skipped_checks"]
    ]
    return CheckovReport(framework, reports[0]["summary"], failed, skipped)


# checkov has no check for these kinds, and skips a whole file that holds one: the alert annotations' Go templates
# ({{ $value }}) make it take the file for a Helm template.
CHECKOV_UNSCANNED_KINDS = frozenset({"PrometheusRule"})


def checkov_all(files: dict[str, Path]) -> dict[str, CheckovReport]:
    """checkov on the Dockerfile and on each rendering separately (it merges same-named objects across files)."""
    reports = {"Dockerfile": checkov("dockerfile", [DOCKERFILE])}
    for name, path in files.items():
        docs = documents(path.read_text())
        scanned = [d for d in docs if d["kind"] not in CHECKOV_UNSCANNED_KINDS]
        if len(scanned) < len(docs):
            path = path.with_name(f"{path.stem}.checkov.yaml")
            path.write_text(yaml.safe_dump_all(scanned, sort_keys=False))
        reports[name] = checkov("kubernetes", [path])
    return reports


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    del argv
    problems: list[str] = []
    findings = hadolint()
    out(f"hadolint ({hadolint_version()}): {len(findings)} finding(s) in Dockerfile")
    problems += [f"hadolint {f['code']} line {f['line']}: {f['message']}" for f in findings]
    with tempfile.TemporaryDirectory(prefix="triage-deploy-") as tmp:
        files = render_all(Path(tmp))
        for name, path in files.items():
            kinds = [d["kind"] for d in documents(path.read_text())]
            out(f"kubectl kustomize {name}: {len(kinds)} objects ({', '.join(sorted(set(kinds)))})")
        schemas = check_schemas(files)
        out(
            f"kubernetes-validate --strict (newest and {MIN_KUBERNETES}): {len(schemas.passed)} objects passed; "
            f"custom resources checked against their CRD models: {len(schemas.custom)}; "
            f"PromQL expressions parsed: {schemas.expressions}; failures: {len(schemas.failed)}"
        )
        problems += schemas.failed
        for name, report in checkov_all(files).items():
            s = report.summary
            out(
                f"checkov {report.framework} {name}: passed {s['passed']}, failed {s['failed']}, "
                f"skipped {s['skipped']}, parsing errors {s['parsing_errors']}, resources {s['resource_count']}"
            )
            for check_id, resource, why in sorted(set(report.skipped)):
                out(f"  suppressed {check_id} on {resource}: {why}")
            problems += report.failed
            if s["parsing_errors"]:
                problems.append(f"checkov {report.framework}: {s['parsing_errors']} file(s) could not be parsed")
    for problem in problems:
        out(f"FAIL {problem}")
    out("deployment files: OK" if not problems else f"deployment files: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

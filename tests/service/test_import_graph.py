"""``service/`` never reaches torch, ``export`` or the command line, read from the source alone: every module under
``service/`` is parsed with ``ast``, every import in it (at the top, inside functions, under ``TYPE_CHECKING``) is
resolved, and the project's own modules are followed to the end. ``test_no_torch`` checks the same at run time, for
the paths that run; this covers the ones that do not run in a test (lazy imports, error branches)."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("service", "model", "export", "triage_cli")
FORBIDDEN = ("torch", "torchvision", "onnxscript", "export", "triage_cli")


def module_file(root: Path, name: str) -> Path | None:
    """The file of the project module ``name`` (``a.b`` is ``a/b.py`` or ``a/b/__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, with the packages that importing it runs."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            for alias in node.names:  # ``from a import b`` imports the module a.b where there is one
                if module_file(root, f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    with_parents = set(found)
    for imported in found:
        parts = imported.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return with_parents


def reached_from(root: Path, package: str) -> dict[str, list[str]]:
    """Every module reached from the modules under ``package``, each with one chain of imports that reaches it."""
    start = sorted((root / package).rglob("*.py"))
    chains = {module_name(root, path): [module_name(root, path)] for path in start}
    todo = deque(chains)
    while todo:
        current = todo.popleft()
        path = module_file(root, current)
        if path is None or current.split(".")[0] not in PROJECT:
            continue  # another package: its name is all that counts
        for imported in sorted(imports_of(root, path)):
            if imported not in chains:
                chains[imported] = [*chains[current], imported]
                todo.append(imported)
    return chains


def forbidden(chains: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: chain for name, chain in chains.items() if name.split(".")[0] in FORBIDDEN}


def test_service_never_reaches_torch_export_or_the_command_line() -> None:
    chains = reached_from(ROOT, "service")
    assert not forbidden(chains), "\n".join(" -> ".join(chain) for chain in forbidden(chains).values())
    # The checker did walk the tree: the serving stack and the torch-free model modules are all in it.
    assert {"service.server", "service.runtime.internals", "onnxruntime", "litserve", "numpy"} <= set(chains)
    assert {"model.config", "model.card", "model.preprocess", "model.numpy_net", "model.receptive_field"} <= set(chains)


def test_the_model_modules_that_import_torch_are_known_and_out_of_reach() -> None:
    """Which ``model`` modules are torch-side, from the source: the service reaches none of them."""
    torch_side = set()
    for path in sorted((ROOT / "model").rglob("*.py")):
        name = module_name(ROOT, path)
        if any(imported.split(".")[0] in ("torch", "torchvision") for imported in closure(ROOT, name)):
            torch_side.add(name)
    assert {"model.network", "model.train", "model.augment", "model.crack_supervision"} <= torch_side
    assert not torch_side & set(reached_from(ROOT, "service"))


def closure(root: Path, start: str) -> set[str]:
    seen, todo = {start}, deque([start])
    while todo:
        path = module_file(root, todo.popleft())
        if path is None:
            continue
        for imported in imports_of(root, path) - seen:
            seen.add(imported)
            if imported.split(".")[0] in PROJECT:
                todo.append(imported)
    return seen


def test_the_checker_finds_lazy_relative_and_indirect_imports(tmp_path: Path) -> None:
    """The checker itself: a torch import two hops away, inside a function, through a relative import, is found
    with its chain; a tree without one passes."""
    (tmp_path / "service" / "room").mkdir(parents=True)
    (tmp_path / "model").mkdir()
    (tmp_path / "service" / "__init__.py").write_text("")
    (tmp_path / "service" / "room" / "__init__.py").write_text("")
    (tmp_path / "service" / "room" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "service" / "room" / "b.py").write_text("def g():\n    from model import config\n")
    (tmp_path / "model" / "__init__.py").write_text("")
    (tmp_path / "model" / "config.py").write_text("X = 1\n")
    assert {"service.room.b", "service.room", "service"} <= imports_of(tmp_path, tmp_path / "service/room/a.py")
    assert forbidden(reached_from(tmp_path, "service")) == {}
    (tmp_path / "model" / "config.py").write_text("X = 1\n\n\ndef train():\n    import torch.nn\n")
    found = forbidden(reached_from(tmp_path, "service"))
    assert set(found) == {"torch", "torch.nn"}
    assert found["torch.nn"] == ["service.room.b", "model.config", "torch.nn"]


INTERNAL_MODULES = ("litserve.loops", "litserve.transport", "litserve.utils", "litserve.server", "uvicorn.protocols")
INTERNAL_ATTRIBUTES = {"_transport", "_init_manager", "_start_server", "_inference_workers_config_for_api", "_process"}


def test_only_the_internals_module_touches_litserve_and_uvicorn_internals() -> None:
    door = ROOT / "service" / "runtime" / "internals.py"
    touches = []
    for path in sorted([*(ROOT / "service").rglob("*.py"), *(ROOT / "triage_cli").rglob("*.py")]):
        if path == door:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for imported in imports_of(ROOT, path):
            if imported.startswith(INTERNAL_MODULES):
                touches.append(f"{path.relative_to(ROOT)} imports {imported}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in INTERNAL_ATTRIBUTES:
                touches.append(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
    assert touches == []
    assert {"litserve.loops.base", "uvicorn.protocols.http.httptools_impl"} <= imports_of(ROOT, door)


def test_explanations_do_not_speak_http() -> None:
    for path in sorted((ROOT / "service" / "explain").rglob("*.py")):
        reached = {name for name in imports_of(ROOT, path) if name.startswith(("service.http", "service.runtime"))}
        assert reached == set(), f"{path.relative_to(ROOT)} imports {reached}"

"""The import structure is the architecture (docs/architecture.md): every import points down.

Layers, lowest first: `pull` < the signature families (`trust.errors`, `trust.keys`,
`trust.attached`, `trust.verifiers`, `trust.cosign`, `trust.sigstore`, `trust.notation`,
`trust.attest`) < `policy` < `run` < `trust.store_ops` < `trust.webhook` < `trust.cli`. Every import
statement counts, also those inside functions and under `TYPE_CHECKING`: a lazy import upward is
still a cycle in the design. `policy` and `run` reach a family only through its public face (its
`__init__.py`), so the modules behind a face can change without touching the layers above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pull", "trust", "policy", "run")

LAYERS: list[tuple[str, int]] = [
    ("pull", 0),
    ("trust.errors", 1),
    ("trust.keys", 1),
    ("trust.attached", 1),
    ("trust.verifiers", 1),
    ("trust.cosign", 1),
    ("trust.sigstore", 1),
    ("trust.notation", 1),
    ("trust.attest", 1),
    ("policy", 2),
    ("run", 3),
    ("trust.store_ops", 4),
    ("trust.webhook", 5),
    ("trust.cli", 6),
    ("trust.__main__", 6),
    ("trust", 0),  # the package itself holds only the version
]
FAMILIES = ("trust.keys", "trust.cosign", "trust.sigstore", "trust.notation", "trust.attest")


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a project package in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from trust.cli import copy` imports the module trust.cli.copy
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in names[1:] if _is_module(name)] or [node.module]
        else:
            continue
        found.extend((node.lineno, name) for name in names if name.split(".")[0] in PACKAGES)
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    importer = module_name(path)
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {imported} "
        f"(layer {layer_of(imported)} > {layer_of(importer)})"
        for line, imported in project_imports(path)
        if layer_of(imported) > layer_of(importer)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if p.parts[len(ROOT.parts)] in ("policy", "run")], ids=str
)
def test_policy_and_run_use_family_faces(path: Path) -> None:
    behind = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}, behind the face of {family}"
        for line, imported in project_imports(path)
        for family in FAMILIES
        if imported.startswith(family + ".")
    ]
    assert not behind, "\n".join(behind)


def test_the_checker_sees_upward_imports(tmp_path: Path) -> None:
    """The check itself: a lazy import of the command line from the policy is caught."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from trust.cli.common import open_store\n    import pull.store\n")
    imports = project_imports(source)
    assert (2, "trust.cli.common") in imports
    assert layer_of("trust.cli.common") > layer_of("policy.admission")
    assert layer_of("pull.store") < layer_of("trust.cosign.signing") < layer_of("policy.model")


def test_records_are_declared_with_pull_records() -> None:
    """Not with the standard library's `dataclasses` (docs/architecture.md, "Start-up cost"): it
    compiles six methods per class when a module is imported, paid by every new `trust` process."""
    stdlib = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if (isinstance(node, ast.Import) and any(alias.name == "dataclasses" for alias in node.names))
        or (isinstance(node, ast.ImportFrom) and node.module == "dataclasses")
    ]
    assert not stdlib, "import pull.records instead of dataclasses: " + ", ".join(stdlib)

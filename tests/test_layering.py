"""The package layout of docs/architecture.md: each package imports only the packages its row allows
(arrows point down the table). ``storage`` (fsspec helpers), ``rundir`` (the run directory's
layout), ``progress`` (the progress callback), ``entrypoints`` (the user's code by name) and the
package root (``__version__``) import nothing above them and serve every layer. Ray stays out
of the math: no ``estimators`` or ``measures`` module imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import intermodal

SOURCE = Path(intermodal.__file__).parent
UTILITIES = {"storage", "rundir", "progress", "entrypoints", ""}
ALLOWED = {
    "schemas": set(),
    "estimators": {"schemas"},
    "models": {"estimators", "schemas"},
    "synthetic": {"schemas"},
    "operators": {"estimators", "models", "schemas"},
    "charts": {"schemas"},
    "measures": {"charts", "estimators", "models", "operators", "schemas"},
    "cluster": {"schemas"},
    "report": {"charts", "measures", "schemas"},
    "pipelines": {
        "charts",
        "cluster",
        "estimators",
        "measures",
        "models",
        "operators",
        "report",
        "schemas",
        "synthetic",
    },
    "validation": {
        "cluster",
        "estimators",
        "measures",
        "models",
        "pipelines",
        "report",
        "schemas",
        "synthetic",
    },
    "export": {"cluster", "estimators", "measures", "schemas"},
    "selection": {"estimators", "measures", "models", "pipelines", "schemas", "synthetic"},
    "explain": {"estimators", "models", "operators", "schemas"},
    "cli": {
        "pipelines",
        "cluster",
        "export",
        "measures",
        "report",
        "schemas",
        "selection",
        "validation",
    },
}
# third-party packages a package must not import: the math runs without a cluster
FORBIDDEN = {
    "estimators": {"ray"},
    "measures": {"ray"},
    "explain": {"ray"},
    "schemas": {"ray", "torch"},
}


def modules(package: str) -> list[Path]:
    """The modules of a package directory, or the one module ``<package>.py``."""
    single = SOURCE / f"{package}.py"
    return [single] if single.exists() else sorted((SOURCE / package).rglob("*.py"))


def imported_top_levels(path: Path) -> set[str]:
    """Every top-level package a module imports (``numpy``, ``ray``, ``intermodal``...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages that a module imports (``intermodal.<package>...``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "intermodal":
                found.add(parts[1] if len(parts) > 1 else "")
    return found


def test_each_package_imports_only_what_design_allows() -> None:
    breaches = []
    for package, allowed in ALLOWED.items():
        for path in modules(package):
            extra = imported_packages(path) - allowed - UTILITIES - {package}
            if extra:
                breaches.append(f"{path.relative_to(SOURCE)} imports {sorted(extra)}")
    assert not breaches, "\n".join(breaches)


def test_every_package_has_a_row() -> None:
    packages = {p.stem for p in SOURCE.iterdir() if p.suffix == ".py" or any(p.glob("*.py"))}
    assert packages - {"__init__"} - UTILITIES == set(ALLOWED)


def test_only_the_command_line_imports_validation() -> None:
    """The ground-truth suites sit on top: no job graph or measure depends on them."""
    importers = sorted(package for package, allowed in ALLOWED.items() if "validation" in allowed)
    assert importers == ["cli"]


def test_the_math_runs_without_ray() -> None:
    breaches = [
        f"{path.relative_to(SOURCE)} imports {sorted(found)}"
        for package, forbidden in FORBIDDEN.items()
        for path in modules(package)
        if (found := imported_top_levels(path) & forbidden)
    ]
    assert not breaches, "\n".join(breaches)


def test_utilities_import_nothing_above_them() -> None:
    assert imported_packages(SOURCE / "storage.py") <= {"storage"}
    assert imported_packages(SOURCE / "rundir.py") <= {"", "storage", "rundir"}


def test_the_check_sees_imports(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("import intermodal.pipelines.score\nfrom intermodal.models import i2moe\n")
    assert imported_packages(module) == {"pipelines", "models"}

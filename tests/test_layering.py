"""The package layout of DESIGN.md: each package imports only the packages its row allows
(arrows point down the table). ``storage`` (fsspec helpers) and the package root
(``__version__``) import nothing of ours and serve every layer."""

from __future__ import annotations

import ast
from pathlib import Path

import intermodal

SOURCE = Path(intermodal.__file__).parent
UTILITIES = {"storage", ""}
ALLOWED = {
    "schemas": set(),
    "estimators": {"schemas"},
    "models": {"estimators", "schemas"},
    "synthetic": {"schemas"},
    "operators": {"estimators", "models", "schemas"},
    "cluster": {"schemas"},
    "report": {"schemas"},
}


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
        for path in sorted((SOURCE / package).rglob("*.py")):
            extra = imported_packages(path) - allowed - UTILITIES - {package}
            if extra:
                breaches.append(f"{path.relative_to(SOURCE)} imports {sorted(extra)}")
    assert not breaches, "\n".join(breaches)


def test_utilities_import_nothing_of_ours() -> None:
    assert imported_packages(SOURCE / "storage.py") <= {"storage"}


def test_the_check_sees_imports(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("import intermodal.pipelines.score\nfrom intermodal.models import i2moe\n")
    assert imported_packages(module) == {"pipelines", "models"}

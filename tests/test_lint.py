"""The code stays ruff-clean and the house boundaries hold (checked in CI with every test run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "emage_agent"


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff_is_clean(args: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    result = subprocess.run(
        [ruff, *args, "emage_agent", "flux_vlm_pipeline", "tests", "benchmarks"],
        cwd=ROOT,
        text=True,
        capture_output=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def importers(pattern: str) -> set[str]:
    regex = re.compile(pattern, re.MULTILINE)
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if regex.search(p.read_text())}


def test_only_the_gemini_package_imports_google_genai() -> None:
    found = importers(r"^\s*(from google import genai|from google\.genai|import google\.genai)")
    assert found and all(name.startswith("vlm/gemini/") for name in found), found


def test_only_the_executor_imports_torch_diffusers_transformers() -> None:
    found = importers(r"^\s*(import|from) (torch|diffusers|transformers)\b")
    assert found and all(name.startswith("executor/") for name in found), found


def test_only_the_engine_imports_ray_and_the_cli_never_at_start() -> None:
    found = importers(r"^\s*(import|from) ray\b")
    assert found == {"engine/cluster.py", "engine/backend.py"}, found
    top_level = importers(r"^(import|from) ray\b")
    assert top_level == {"engine/cluster.py"}, top_level  # engine/__init__ does not import it
    assert "cluster" not in (PACKAGE / "engine" / "__init__.py").read_text().split('"""')[-1]


def test_only_the_openai_compatible_backend_imports_openai() -> None:
    found = importers(r"^\s*(import openai|from openai\b)")
    assert found and all(name.startswith("vlm/openai_compat/") for name in found), found


ADAPTERS = ("adapters",)  # top-level names of the adapter layer


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def internal_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The ``emage_agent`` modules a file imports anywhere: module level, inside functions and under
    ``TYPE_CHECKING`` (a circle through a lazy import is still a circle); ``top_level_only`` for the rest."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emage_agent"):
            for alias in node.names:  # ``from pkg import module`` needs the module; ``from m import name``, m
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists() else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("emage_agent")}
    return found


def test_no_module_shares_a_prefix_family_with_its_siblings() -> None:
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").exists())]:
        stems = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
        families = sorted(s for s in stems if "_" in s and s.split("_", 1)[0] in stems)
        assert not families, f"{folder.relative_to(ROOT)}: {families} beside their prefix: make a package"


def test_imports_of_any_kind_form_no_cycle() -> None:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in internal_imports(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):  # a package importing its own modules is fine
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_nothing_below_the_adapters_imports_them() -> None:
    adapters = {f"emage_agent.{a}" for a in ADAPTERS}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.split(".")[:2] and ".".join(name.split(".")[:2]) in adapters:
            continue
        bad = {m for m in internal_imports(path) if ".".join(m.split(".")[:2]) in adapters}
        assert not bad, f"{name} imports the adapter(s) {sorted(bad)}"


def test_package_faces_export_only_what_other_packages_use() -> None:
    import ast

    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}  # a use by tests alone is none
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE:
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        exported = next(
            (
                [ast.literal_eval(e) for e in node.value.elts]
                for node in tree.body
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
            ),
            [],
        )
        package = module_name(init)
        outside = [src for p, src in sources.items() if not p.is_relative_to(init.parent) and p.is_relative_to(PACKAGE)]
        unused = [n for n in exported if not any(re.search(rf"\b{re.escape(n)}\b", src) for src in outside)]
        assert not unused, f"{package} exports {unused}, which nothing outside it uses"


def test_the_package_root_holds_only_the_facade_and_the_layers() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "api.py"})
    assert not loose, f"modules loose at the root of emage_agent/: {loose}; each belongs to a layer"
    layers = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert layers == ["adapters", "core", "engine", "executor", "loop", "session", "strategy", "vlm"], layers

"""The package's shape, as a newcomer reads it: the README's layout table names what exists,
imports run one way (env, search, stream, compiled -> model, config -> llm -> orz -> agent -> roles -> hub), classes stay short."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "pzstream"

# Lower layers never import higher ones. A part may import its own layer and any lower one.
LAYERS: dict[str, int] = {
    "env": 0, "search": 0, "stream": 0, "compiled": 0,
    "model": 1, "config": 1,  # the run config composes the world model's (model/config.py)
    "llm": 2,
    "orz": 3,
    "agent": 4, "parallel": 4, "move_batcher": 4,  # move_batcher: one search for many games (uses agent)
    "roles": 5,
    "hub": 6,
}
MAX_CLASS_LINES = 260


def _part(module: str) -> str | None:
    """'pzstream.stream.wire' -> 'stream'; None for imports from outside the package."""
    bits = module.split(".")
    return bits[1] if bits[0] == "pzstream" and len(bits) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every pzstream import in a file, relative ones resolved."""
    rel = path.relative_to(REPO).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module is None and node.level:  # "from . import x": x are modules of that package
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
    return [(line, m) for line, m in out if m.startswith("pzstream")]


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts == set(LAYERS), f"parts without a layer, or layers without a part: {parts ^ set(LAYERS)}"


def test_no_import_runs_upward():
    upward = []
    for path in sorted(PKG.rglob("*.py")):
        here = _part(".".join(path.relative_to(REPO).with_suffix("").parts))
        if here is None:
            continue
        for line, module in _imports(path):
            there = _part(module)
            if there is not None and there != here and LAYERS[there] > LAYERS[here]:
                upward.append(f"{path.relative_to(REPO)}:{line} ({here}) imports {module} ({there})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_classes_stay_short():
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno > MAX_CLASS_LINES:
                long.append(f"{path.relative_to(REPO)}: {node.name} ({node.end_lineno - node.lineno} lines)")
    assert not long, "classes over ~250 lines:\n" + "\n".join(long)


def _layout_table() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", section, re.M)]


def test_readme_layout_names_only_what_exists():
    rows = _layout_table()
    assert rows, "README.md has no layout table"
    missing = [r for r in rows if not (REPO / r).exists()]
    assert not missing, f"README layout names paths that do not exist: {missing}"


def test_readme_layout_names_every_part():
    rows = set(_layout_table())
    unnamed = []
    for p in sorted(PKG.iterdir()):
        if p.name.startswith(("_", ".")):
            continue
        if p.is_dir():
            # a package is named as a whole ("pzstream/hub/") or module by module
            if f"pzstream/{p.name}/" not in rows and not any(r.startswith(f"pzstream/{p.name}/") for r in rows):
                unnamed.append(f"pzstream/{p.name}/")
        elif p.suffix == ".py" and f"pzstream/{p.name}" not in rows:
            unnamed.append(f"pzstream/{p.name}")
    assert not unnamed, f"README layout table does not name: {unnamed}"

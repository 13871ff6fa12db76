"""The ShapesWorld toy world is walled off: no framework module imports it.

The framework folders reach the toy world's plug-ins (reward ``shapes``, codec ``shapes``) by name
through the registry, so ShapesWorld can change or go without touching training code. Every import is
read with ``ast`` (function-level ones too), relative ones resolved against the importing module, and
so are ``"pairuni_sidecar.shapesworld..."`` strings (``importlib`` or lazy registry entries).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pairuni_sidecar
from pairuni_sidecar.registry import resolve

PKG = Path(pairuni_sidecar.__file__).parent
WALLED = "pairuni_sidecar.shapesworld"
FRAMEWORK = ["policy", "adapters", "diffusion", "rollout", "rewards", "ops/train.py"]


def _module_name(path: Path, root: Path) -> list[str]:
    parts = ["pairuni_sidecar", *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_names(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the file, and of every string naming a module."""
    me = _module_name(path, root)
    package = me if path.name == "__init__.py" else me[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + (node.module.split(".") if node.module else []))
            # `from .. import shapesworld` imports the submodule named in the list
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("pairuni_sidecar."):
                out.append((node.lineno, node.value.split(":")[0]))
    return out


def framework_files() -> list[Path]:
    files = []
    for entry in FRAMEWORK:
        p = PKG / entry
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


def walled_imports(files: list[Path], root: Path = PKG) -> list[str]:
    return [
        f"{f.relative_to(root)}:{line} imports {name}"
        for f in files
        for line, name in imported_names(f, root)
        if name == WALLED or name.startswith(WALLED + ".")
    ]


def test_framework_folders_do_not_import_shapesworld():
    files = framework_files()
    assert len(files) >= 20 and all(f.is_file() for f in files)  # the folders are really there
    assert walled_imports(files) == []


@pytest.mark.parametrize(
    "source, found",
    [
        ("from ..shapesworld.detect import detect\n", "1 imports pairuni_sidecar.shapesworld.detect.detect"),
        ("def f():\n    from .. import shapesworld\n", "2 imports pairuni_sidecar.shapesworld"),
        ("import pairuni_sidecar.shapesworld.render as r\n", "1 imports pairuni_sidecar.shapesworld.render"),
        (
            "X = 'pairuni_sidecar.shapesworld.reward:make_shapes_scorer'\n",
            "1 imports pairuni_sidecar.shapesworld.reward",
        ),
        ("from ..shapes_extra import x\nfrom . import shapesworld_like\n", None),
    ],
)
def test_the_check_sees_every_import_form(tmp_path, source, found):
    # A module placed as if it were adapters/probe.py: its relative imports resolve from adapters/.
    probe = tmp_path / "adapters" / "probe.py"
    probe.parent.mkdir()
    probe.write_text(source)
    assert walled_imports([probe], tmp_path) == ([f"adapters/probe.py:{found}"] if found else [])


def test_the_toy_world_registers_its_plugins_by_name():
    # The registry, not an import in the framework, connects the names to ShapesWorld's code.
    from pairuni_sidecar.shapesworld.codec import ShapesCodec
    from pairuni_sidecar.shapesworld.reward import ShapesScorer

    assert isinstance(resolve("reward", "shapes")({"mode": "binary"}), ShapesScorer)
    assert isinstance(resolve("codec", "shapes")({}), ShapesCodec)

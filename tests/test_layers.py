"""The layers point one way: ``config/io/device/distributed -> data -> models -> train -> search/serve ->
cli``. A module imports only from its own layer or those below, at the top of the file or
inside a function alike (a late import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import darec

SOURCE = Path(darec.__file__).parent
# darec.X -> layer; a module's layer is that of its longest listed prefix.
LAYERS = {"darec": 0, "darec.config": 0, "darec.io": 0, "darec.device": 0, "darec.distributed": 0, "darec.data": 1, "darec.models": 2,
          "darec.train": 3, "darec.search": 4, "darec.serve": 4, "darec.cli": 5, "darec.__main__": 5,
          "darec.reliability": 5}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    raise AssertionError(f"{module}: not in any layer; add its package to LAYERS")


def module_name(path: Path) -> str:
    parts = ["darec", *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The darec modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("darec")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("darec"):
            found.add(node.module)
    return found


def test_every_module_imports_only_from_its_layer_or_below() -> None:
    modules = sorted(SOURCE.rglob("*.py"))
    assert len(modules) > 30  # the walk found the package
    upward = [f"{module_name(p)} (layer {layer(module_name(p))}) imports {m} (layer {layer(m)})"
              for p in modules for m in sorted(imports(p)) if layer(m) > layer(module_name(p))]
    assert not upward, "\n".join(upward)


def test_the_check_sees_late_imports(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("import os\nfrom darec.data import load_dataset\n\n\ndef f():\n    from darec.train.run import load_run\n")
    assert imports(module) == {"darec.data", "darec.train.run"}
    assert layer("darec.train.run") > layer("darec.models.base") == layer("darec.models")

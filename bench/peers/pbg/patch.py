"""Make an installed PyTorch-BigGraph 1.0.0 run on Python >= 3.11, setuptools >= 81 and torch >= 2.6.

    python bench/peers/pbg/patch.py SITE_PACKAGES/torchbiggraph

Run by bench/peers/pbg.sh on the peer's own venv; idempotent (a second run changes nothing).

- `pkg_resources` is gone from recent setuptools: the package reads its VERSION.txt (and the
  examples their config files) through `importlib.resources` instead.
- torch >= 2.6 loads with `weights_only=True` by default, which refuses the pickled Python
  objects PBG sends between its processes and keeps in checkpoints: every `torch.load` call
  that does not say otherwise gets `weights_only=False`, the behaviour PBG was written for.

Nothing else changes: the training, import and evaluation code is PBG's own.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

RESOURCE_STRING = re.compile(
    r'pkg_resources\.resource_string\(\s*"torchbiggraph",\s*"VERSION\.txt"\s*\)\s*\.decode\("utf-8"\)')
RESOURCE_FILENAME = re.compile(r'pkg_resources\.resource_filename\(\s*"([\w.]+)",\s*"([^"]+)"\s*\)')
TORCH_LOAD = re.compile(r"torch\.load\(([^()]*)\)")


def without_pkg_resources(text: str) -> str:
    text = text.replace("import pkg_resources\n", "import importlib.resources\n")
    text = RESOURCE_STRING.sub('(importlib.resources.files("torchbiggraph") / "VERSION.txt").read_text("utf-8")',
                               text)
    return RESOURCE_FILENAME.sub(r'str(importlib.resources.files("\1") / "\2")', text)


def loads_pickles(text: str) -> str:
    def add_flag(match: re.Match[str]) -> str:
        args = match.group(1)
        return match.group(0) if "weights_only" in args else f"torch.load({args}, weights_only=False)"

    return TORCH_LOAD.sub(add_flag, text)


def main(package: Path) -> None:
    if not (package / "config.py").is_file() or not (package / "train.py").is_file():
        raise SystemExit(f"patch.py: {package} is not the torchbiggraph package folder")
    edits: dict[str, Callable[[str], str]] = {
        "__init__.py": without_pkg_resources,
        "examples/fb15k.py": without_pkg_resources,
        "examples/livejournal.py": without_pkg_resources,
        "rpc.py": loads_pickles,
        "checkpoint_manager.py": loads_pickles,
        "checkpoint_storage.py": loads_pickles,
    }
    changed = []
    for name, edit in edits.items():
        path = package / name
        if path.is_file():
            old = path.read_text()
            new = edit(old)
            if new != old:
                path.write_text(new)
                changed.append(name)
    left = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "pkg_resources" in p.read_text())
    if left:
        raise SystemExit(f"patch.py: pkg_resources is still used by {', '.join(left)}")
    print(f"patch.py: {', '.join(changed) if changed else 'already patched'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))

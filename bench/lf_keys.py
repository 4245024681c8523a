"""Write tests/fixtures/llamafactory_0.9.5_keys.json: every key of LLaMA-Factory's hparams dataclasses.

Facts, read once from LLaMA-Factory's source (no import, no install): each dataclass field under
src/llamafactory/hparams/*_args.py with its class and default. Usage:

    git -C <LLaMA-Factory clone> archive v0.9.5 src/llamafactory/hparams | tar -x -C /tmp/lf
    python bench/lf_keys.py /tmp/lf/src/llamafactory/hparams
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path


def keys(hparams: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path in sorted(hparams.glob("*_args.py")):
        for cls in (n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)):
            for node in cls.body:
                if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                    continue
                default = None
                for kw in node.value.keywords if isinstance(node.value, ast.Call) else ():
                    if kw.arg == "default":
                        try:
                            default = ast.literal_eval(kw.value)
                        except ValueError:
                            default = ast.unparse(kw.value)
                out.setdefault(node.target.id, {"file": path.name, "class": cls.name, "default": default})
    return out


if __name__ == "__main__":
    found = keys(Path(sys.argv[1]))
    target = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llamafactory_0.9.5_keys.json"
    target.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"{len(found)} keys -> {target}")

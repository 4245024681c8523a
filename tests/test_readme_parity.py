"""README.zh-CN.md keeps step with README.md: both show the same `instill <command>`s in their code blocks.

The comparison is over command names (`train`, `eval`, `data convert`, ...) found at the start of a
line in fenced code blocks, so when README.md gains a section with a new command (e.g. `instill serve`),
this test fails until the Chinese README shows it too.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from instill.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_COMMAND = re.compile(r"^\s*(?:\$\s+)?instill\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", re.M)


def commands(path: Path) -> set[str]:
    """`instill <command>` names in the file's code blocks; `data` keeps its subcommand (`data check`)."""
    found = set()
    for block in _FENCE.findall(path.read_text(encoding="utf-8")):
        for match in _COMMAND.finditer(block):
            name, sub = match.groups()
            found.add(f"{name} {sub}" if name == "data" and sub else name)
    return found


def parser_commands() -> set[str]:
    names = set()
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                names.add(name)
                for inner in sub._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        names.update(f"{name} {s}" for s in inner.choices)
    return names


def test_extracts_commands_from_code_blocks_only(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("Run instill train here.\n\n```bash\ninstill train a.yaml\n$ instill data check a.yaml\n"
                    "instill: error: not a command\n# instill eval (a comment)\n```\n")
    assert commands(page) == {"train", "data check"}


def test_chinese_readme_lists_the_same_commands():
    english, chinese = commands(ROOT / "README.md"), commands(ROOT / "README.zh-CN.md")
    assert english, "no instill commands found in README.md's code blocks"
    assert chinese == english, (f"only in README.md: {sorted(english - chinese)}; "
                                f"only in README.zh-CN.md: {sorted(chinese - english)}")


def test_readme_commands_exist():
    documented = commands(ROOT / "README.md") | commands(ROOT / "README.zh-CN.md")
    assert documented - {"data"} <= parser_commands(), sorted(documented - parser_commands())


def test_chinese_readme_has_its_sections():
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.zh-CN.md").read_text(encoding="utf-8"), re.M)
    for section in ("快速开始", "训练", "数据", "评测", "部署", "体检"):
        assert any(h.startswith(section) for h in headings), section

"""Run the examples of the README and the documentation as a user would paste them.

A fenced ``python`` block is executed as a program; a ``text`` block right after it is its expected output
(each expected line must start an output line, in order). In a ``console`` block each ``$ anisearch ...``
line is run and the lines under it are its expected output, checked the same way.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.cli_runner import run_in_process

FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL
)


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, text, where it starts, and the output it promises."""

    lang: str
    code: str
    where: str
    output: str | None = None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file; a ``text`` block is attached to the block before it."""
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        where = f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}"
        if match["lang"] == "text" and found and found[-1].output is None:
            found[-1] = Block(found[-1].lang, found[-1].code, found[-1].where, body)
            continue
        found.append(Block(match["lang"], body, where))
    return found


def assert_lines(expected: str, actual: str, where: str) -> None:
    """Every expected line starts an actual line, in order (long lines may be shown cut short)."""
    lines = [line.rstrip() for line in actual.splitlines()]
    position = 0
    for wanted in (line.rstrip() for line in expected.splitlines() if line.strip()):
        while position < len(lines) and not lines[position].startswith(wanted):
            position += 1
        assert position < len(lines), f"{where}: {wanted!r} not in the output:\n{actual}"
        position += 1


def run_python(block: Block) -> str:
    """Execute a ``python`` block as ``__main__``; return what it printed and check its promised output."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block.code, block.where, "exec"), {"__name__": "__main__"})  # noqa: S102 - the docs' own code
    if block.output is not None:
        assert_lines(block.output, printed.getvalue(), block.where)
    return printed.getvalue()


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """Each ``$ ...`` line of a ``console`` block (without the ``$ ``), and the output lines under it."""
    found: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found:
            found[-1][1].append(line)
    return found


def shown(output: str, shown_as: Mapping[str, str] | None) -> str:
    """``output`` with each key of ``shown_as`` (an emulator's URL on a free port) written as the page
    writes it (the emulator's documented port); the longest first, so no URL is half replaced."""
    for actual in sorted(shown_as or {}, key=len, reverse=True):
        output = output.replace(actual, (shown_as or {})[actual])
    return output


def run_console(block: Block, shown_as: Mapping[str, str] | None = None) -> list[int]:
    """Run each ``$ anisearch ...`` of a ``console`` block in process; check the output under it (with
    ``shown_as`` applied to the output, see :func:`shown`)."""
    codes = []
    for command, expected in commands(block):
        argv = shlex.split(command)
        assert argv[0] == "anisearch", f"{block.where}: only anisearch commands run here: {command}"
        done = run_in_process(*argv[1:])
        assert done.returncode in {0, 1}, f"{block.where}: {command} exited {done.returncode}: {done.stderr}"
        assert_lines("\n".join(expected), shown(done.stdout, shown_as), f"{block.where} ({command})")
        codes.append(done.returncode)
    return codes

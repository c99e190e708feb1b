"""Run the fenced ```python blocks of one Markdown file, in order, as one module.

    python tests/run_snippets.py README.md

Blocks share one namespace (a page is read top to bottom), top-level ``await`` and
``async with`` are allowed, and every ``test_*`` function a block defines is called
after it. Used by tests/test_docs.py, in a subprocess per page, from a temp directory.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import types
from pathlib import Path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(text: str) -> list[tuple[int, str]]:
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


def run(path: Path) -> int:
    module = types.ModuleType("snippets")
    sys.modules["snippets"] = module
    count = 0
    for line, code in blocks(path.read_text()):
        before = set(module.__dict__)
        # Line numbers in tracebacks point into the Markdown file.
        compiled = compile(
            "\n" * (line - 1) + code, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(compiled, module.__dict__)
        if inspect.iscoroutine(result):
            asyncio.run(result)
        for name in sorted(set(module.__dict__) - before):
            if name.startswith("test_") and callable(module.__dict__[name]):
                module.__dict__[name]()
        count += 1
    print(f"{path}: {count} python block(s) ran")
    return count


if __name__ == "__main__":
    run(Path(sys.argv[1]))

"""The code base's shape, as issue 12 set it: no function in src/optbench longer than 45 lines (one that grows
past it gets split into named pieces), and every public optimizer on the one base (tests/test_optim_common.py)."""

from __future__ import annotations

import ast

from conftest import REPO

LIMIT = 45


def test_no_function_is_longer_than_45_lines():
    long = []
    for path in sorted((REPO / "src" / "optbench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "split these functions: " + ", ".join(long)

"""Code shape: no function in fraud_assets/ is longer than MAX_FUNCTION_LINES.

A long function is a sign that it does several things; the limit keeps each
one small enough to read in one screen. Counted from the ``def`` line to the
last line of the body (decorators excluded).
"""

from __future__ import annotations

import ast
from pathlib import Path

MAX_FUNCTION_LINES = 60
PACKAGE = Path(__file__).resolve().parents[1] / "fraud_assets"


def long_functions(root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (n lines)`` for every function (nested ones too) longer than ``limit``."""
    offenders = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    offenders.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return offenders


def test_no_function_is_longer_than_the_limit():
    offenders = long_functions()
    assert not offenders, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)

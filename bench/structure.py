"""The shape of the code, for the redesign's before/after: ``python -m bench.structure``.

Prints the largest modules, the functions over 60 lines, the imports between the parts of
``shared`` (a part is a package, or a top-level module), imports of ``sim`` from ``shared``,
and string-key row lookups (``row["..."]``) in the agents and the hot domain modules.
mypy's share of ``Any`` expressions is measured apart (``mypy --any-exprs-report``).
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONG_LINES = 60
KEY_LOOKUP = re.compile(r"""\b\w+\[["'][a-z_][a-z0-9_]*["']\]""")


def part(module: str) -> str:
    """``shared.db.database`` -> ``shared.db``; ``shared.mdc`` (a top-level module) ->
    ``shared.mdc``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "shared" else parts[0]


def modules() -> list[tuple[str, Path]]:
    found = []
    for top in ("agents", "shared", "sim"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            found.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return found


def imports_of(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] in ("agents", "shared", "sim")}


def main() -> int:
    sizes: list[tuple[int, str]] = []
    long_functions: list[tuple[int, str]] = []
    edges: dict[str, set[str]] = defaultdict(set)
    shared_to_sim: set[str] = set()
    lookups: Counter[str] = Counter()
    known = {name for name, _ in modules()}
    for name, path in modules():
        text = path.read_text()
        tree = ast.parse(text)
        sizes.append((len(text.splitlines()), name))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LONG_LINES:
                    long_functions.append((length, f"{name}.{node.name}"))
        for target in imports_of(tree):
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if name.startswith("shared") and target.startswith("shared") and part(name) != part(target):
                edges[part(name)].add(part(target))
            if name.startswith("shared") and target.startswith("sim"):
                shared_to_sim.add(f"{name} -> {target}")
        if name.startswith(("agents", "shared")):
            lookups[part(name)] += len(KEY_LOOKUP.findall(text))
    print("largest modules (lines):")
    for lines, name in sorted(sizes, reverse=True)[:8]:
        print(f"  {lines:5d}  {name}")
    print(f"functions over {LONG_LINES} lines: {len(long_functions)}")
    for lines, name in sorted(long_functions, reverse=True):
        print(f"  {lines:5d}  {name}")
    print(
        f"parts of shared: {len({part(n) for n, _ in modules() if n.startswith('shared')})}; "
        f"imports between them: {sum(len(v) for v in edges.values())}"
    )
    for source in sorted(edges):
        print(f"  {source} -> {', '.join(sorted(edges[source]))}")
    print(f"shared importing sim: {len(shared_to_sim)}")
    for edge in sorted(shared_to_sim):
        print(f"  {edge}")
    print(
        f"row['key'] lookups: {sum(lookups.values())} "
        f"({', '.join(f'{k} {v}' for k, v in lookups.most_common(8))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

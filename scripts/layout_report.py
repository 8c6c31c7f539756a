#!/usr/bin/env python
"""How walkable the package is: long functions, homes of the output columns, import layers.

Prints, for ``bmdpipe/``:

- the longest function and every function over ``--max-lines`` (80) lines, docstring included
  (decorators to the last line; a nested function counts inside its parent too);
- for each output-contract column (read from ``docs/output-contract.md``, not from the code),
  the files that *spell* it: as a string literal, or as a declared field, column or class
  attribute. Keyword arguments and attribute reads are references the interpreter checks, so
  they are not homes. ``store/migrations/versions/`` is left out: a migration is a dated
  snapshot of the schema and must not follow the code. Generic names that are also everyday
  words of the code (``path``, ``side`` ...) are counted the same way, so a file that declares an
  unrelated field of that name counts too: the report lists the files, read them;
- import cycles between modules (every import, module-level or inside a function);
- modules below :mod:`bmdpipe.pipeline` (the stages, the shared types, the reports, the
  generator) that import :mod:`bmdpipe.store`.

Exit status 1 when a function is over the limit, a column has more than one home in
``bmdpipe/``, a cycle exists or a lower module imports ``store``.

Usage::

    .venv/bin/python scripts/layout_report.py [--max-lines 80] [--root .]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

#: modules at or above the pipeline: they may import store
UPPER = ("bmdpipe.cli", "bmdpipe.batch", "bmdpipe.pipeline", "bmdpipe.store", "bmdpipe.review",
         "bmdpipe.stats", "bmdpipe.__main__")
SNAPSHOTS = ("store/migrations/versions/",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def function_lengths(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function, decorators included."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append((prefix + child.name, first, child.end_lineno - first + 1))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def resolve_import(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the package an import statement loads (a package's ``__init__`` included)."""
    targets = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        names = [stem] + [f"{stem}.{a.name}" for a in node.names]
    for name in names:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the deepest module of the package it names
            cand = ".".join(parts[:i])
            if cand in known:
                targets.add(cand)
                break
    return targets


def import_graph(files: dict[str, Path], trees: dict[str, ast.AST]) -> dict[str, set[str]]:
    known = set(files)
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, tree in trees.items():
        is_package = files[mod].name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in resolve_import(node, mod, is_package, known):
                    # a submodule reaching its own parent package's __init__ by `from . import x`
                    # loads x, which resolve_import already found
                    if target != mod:
                        graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            strong(v)
    return out


def contract_tables(doc: Path) -> dict[str, tuple[str, ...]]:
    """``{table: columns}`` of the contract: the four CSV files and the manifest's columns."""
    text = doc.read_text()
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z]+\.csv`", cells[0]):
            out[cells[0].strip("`")] = tuple(c.strip() for c in cells[2].split("`")[1].split(","))
    manifest = re.search(r"per-series settings: columns\s+([a-z_, ]+?)\s*\n\s*([a-z_, ]+?)\s*\(", text)
    out["manifest"] = tuple(c.strip() for c in (manifest.group(1) + ", " + manifest.group(2)).split(",")
                            if c.strip())
    return out


def _names_in_text(tree: ast.AST, tables: dict[str, tuple[str, ...]]) -> set[str]:
    """Column names a file writes as text in a name position.

    A string is a column's name where it is one of two or more columns of one table listed
    together (a column list, a row written as a dict), or where the file reads two or more
    columns of one table by name (``row["x"]``, ``get``/``pop``/``setdefault``/``getattr``/
    ``setattr``/``Column``/``mapped_column``). Columns shared by tables (``vertebra``) do not
    make a list on their own. A string compared against or passed as a value
    (``method="phantom"``), or a lone key of something else (``{"calibration": png}``, the
    ``"calibration"`` section of a saved calibration file), is not a column's name.
    """
    columns = {c for cols in tables.values() for c in cols}
    owner = {}
    for table, cols in tables.items():
        for c in cols:
            owner[c] = None if c in owner else table
    found, read = set(), set()

    def strings(nodes):
        return [n.value for n in nodes if isinstance(n, ast.Constant) and n.value in columns]

    def of_one_table(names) -> bool:
        per_table = defaultdict(set)
        for name in names:
            if owner[name]:
                per_table[owner[name]].add(name)
        return any(len(n) >= 2 for n in per_table.values())

    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            listed = strings(k for k in node.keys if k is not None)
            found.update(listed if of_one_table(listed) else ())
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            listed = strings(node.elts)
            found.update(listed if of_one_table(listed) else ())
        elif isinstance(node, ast.Subscript):
            read.update(strings([node.slice]))
        elif isinstance(node, ast.Call):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if fn in ("get", "pop", "setdefault", "getattr", "setattr", "Column", "mapped_column") and node.args:
                read.update(strings([node.args[1] if fn in ("getattr", "setattr") and len(node.args) > 1
                                     else node.args[0]]))
    return found | (read if of_one_table(read) else set())


def _table_classes(tree: ast.AST, tables: dict[str, tuple[str, ...]]) -> set[str]:
    """Columns declared by a class that copies a table: a database model (``__tablename__``), or a
    class declaring at least 80 % of a table's columns (a row type). Domain types that carry some
    of the same values (``Calibration.r2``, ``SeriesRef.modality``) are where values come from."""
    columns = {c for cols in tables.values() for c in cols}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            declared = {s.target.id for s in node.body
                        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            declared |= {t.id for s in node.body if isinstance(s, ast.Assign)
                         for t in s.targets if isinstance(t, ast.Name)}
            if "__tablename__" in declared:
                found |= declared & columns
            for cols in tables.values():
                if len(declared & set(cols)) >= 0.8 * len(cols):
                    found |= declared & set(cols)
    return found


def spelled_columns(tree: ast.AST, tables: dict[str, tuple[str, ...]]) -> set[str]:
    """Contract columns a file spells: in text as a name, or by declaring a copy of a table."""
    return _names_in_text(tree, tables) | _table_classes(tree, tables)


def column_homes(root: Path, files: dict[str, Path], trees: dict[str, ast.AST]) -> bool:
    """Print each contract column's homes; True when a column of one table has more than one."""
    tables = contract_tables(root / "docs" / "output-contract.md")
    columns = {c for cols in tables.values() for c in cols}
    owners = defaultdict(list)
    for table, cols in tables.items():
        for c in cols:
            owners[c].append(table)
    spelled = {m: spelled_columns(t, tables) for m, t in trees.items()
               if not any(s in files[m].as_posix() for s in SNAPSHOTS)}
    tests = {p: spelled_columns(ast.parse(p.read_text()), tables) for p in python_files(root / "tests")}
    bad = False
    print("\ncontract columns and the files under bmdpipe/ that spell them (tests in brackets); a column "
          "shared by several tables (the manifest's included) has a home per table and is listed apart:")
    for table, cols in tables.items():
        if table == "manifest":
            continue
        print(f"  {table}")
        for col in cols:
            if len(owners[col]) > 1:
                continue
            homes = sorted(str(files[m].relative_to(root)) for m, names in spelled.items() if col in names)
            in_tests = sorted(str(p.relative_to(root)) for p, names in tests.items() if col in names)
            flag = "" if len(homes) == 1 else "   <-- " + ("no home" if not homes else f"{len(homes)} homes")
            print(f"    {col:28s} {', '.join(homes)}" + (f"  [{', '.join(in_tests)}]" if in_tests else "") + flag)
            bad |= len(homes) != 1
    print("  shared columns (tables: files)")
    for col in sorted(c for c in columns if len(owners[c]) > 1):
        homes = sorted(str(files[m].relative_to(root)) for m, names in spelled.items() if col in names)
        print(f"    {col:12s} ({', '.join(owners[col])}): {', '.join(homes)}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--max-lines", type=int, default=80)
    args = ap.parse_args(argv)
    root = args.root.resolve()
    package = root / "bmdpipe"
    files = {module_name(p, root): p for p in python_files(package)}
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in files.items()}
    bad = False

    lengths = sorted(((n, m, line, f) for m, t in trees.items() for f, line, n in function_lengths(t)),
                     reverse=True)
    n, mod, line, name = lengths[0]
    long = [x for x in lengths if x[0] > args.max_lines]
    print(f"functions: {len(lengths)}; longest: {mod}.{name} ({n} lines, {files[mod].relative_to(root)}:{line})")
    print(f"functions over {args.max_lines} lines: {len(long)}")
    for n, mod, line, name in long:
        print(f"  {n:4d}  {mod}.{name}  ({files[mod].relative_to(root)}:{line})")
    bad |= bool(long)

    bad |= column_homes(root, files, trees)

    graph = import_graph(files, trees)
    found = cycles(graph)
    print(f"\nimport cycles: {len(found) or 'none'}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    bad |= bool(found)

    lower = sorted(m for m in files if not m.startswith(UPPER) and m != "bmdpipe"
                   and any(t.startswith("bmdpipe.store") for t in graph.get(m, ())))
    print(f"modules below the pipeline that import store: {', '.join(lower) or 'none'}")
    bad |= bool(lower)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The rules docs/ARCHITECTURE.md states, checked against src/ (non-test code only).

1. Modules import each other in one direction: the graph of top-level modules (`crate::<module>`
   paths) has no cycle.
2. The store owns every table: outside src/store/ no code names sqlx, a backend type or pool, or
   holds an SQL statement.
3. One job per file: no source file over 800 lines (test-only files — `tests.rs`, `*_tests.rs` —
   do not count).

Prints the import graph, the largest files and every violation; exit status 1 on a violation.

    python3 scripts/check_architecture.py          # report and check
    python3 scripts/check_architecture.py --dot    # the import graph for Graphviz
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MAX_LINES = 800
# Files over the limit that another issue is rewriting; each entry names who removes it.
PENDING: dict = {}
CRATE_PATH = re.compile(r"\bcrate::(\w+)")
LIB_PATH = re.compile(r"\bllm_quality_observer::(\w+)")
BACKEND = re.compile(r"\bsqlx\b|\bPgPool\b|\bSqlitePool\b|\bStore::(Postgres|Sqlite)\b")
SQL = re.compile(r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def strip_test_items(text: str) -> str:
    """Removes every item annotated `#[cfg(test)]` (a `mod tests { … }` or a single item)."""
    out = []
    i = 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = j + len("#[cfg(test)]")
        # The item ends at its first `;` outside braces, or at the brace that closes its body.
        depth = 0
        while k < len(text):
            c = text[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    k += 1
                    break
            elif c == ";" and depth == 0:
                k += 1
                break
            k += 1
        i = k


def is_test_file(path: Path) -> bool:
    return path.name == "tests.rs" or path.stem.endswith("_tests")


def top_module(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.stem if len(rel.parts) == 1 else rel.parts[0]


def sources():
    for path in sorted(SRC.rglob("*.rs")):
        if is_test_file(path):
            continue
        yield path, strip_test_items(strip_comments(path.read_text()))


def import_graph() -> dict:
    edges = defaultdict(set)
    for path, text in sources():
        if path.name == "lib.rs":
            continue
        module = top_module(path)
        edges.setdefault(module, set())
        for m in CRATE_PATH.findall(text) + LIB_PATH.findall(text):
            if m != module:
                edges[module].add(m)
    return edges


def cycles(edges: dict) -> list:
    """Tarjan's strongly connected components with more than one member."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def store_leaks() -> list:
    """(file, line number, line) of backend names and SQL outside src/store/."""
    found = []
    for path, text in sources():
        if path.relative_to(SRC).parts[0] == "store":
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if BACKEND.search(line) or SQL.search(line):
                found.append((path.relative_to(ROOT), n, line.strip()))
    return found


def file_sizes() -> list:
    sizes = []
    for path in SRC.rglob("*.rs"):
        if not is_test_file(path):
            sizes.append((len(path.read_text().splitlines()), str(path.relative_to(ROOT))))
    return sorted(sizes, reverse=True)


def main() -> int:
    edges = import_graph()
    if "--dot" in sys.argv:
        print("digraph modules {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    failed = False
    print("Module imports (non-test code):")
    for a in sorted(edges):
        print(f"  {a:14} -> {', '.join(sorted(edges[a])) or '(nothing of ours)'}")
    found = cycles(edges)
    for c in found:
        print("VIOLATION: import cycle among " + ", ".join(c))
    failed |= bool(found)
    if not found:
        print("  no cycles")

    leaks = store_leaks()
    print(f"\nBackend names or SQL outside src/store/: {len(leaks)}")
    for f, n, line in leaks:
        print(f"VIOLATION: {f}:{n}: {line}")
    failed |= bool(leaks)

    sizes = file_sizes()
    print(f"\nLargest source files (limit {MAX_LINES} lines; test-only files not counted):")
    for lines, f in sizes[:8]:
        print(f"  {lines:5}  {f}")
    for lines, f in sizes:
        if lines <= MAX_LINES:
            break
        if f in PENDING:
            print(f"PENDING: {f} has {lines} lines; left to {PENDING[f]}")
        else:
            print(f"VIOLATION: {f} has {lines} lines")
            failed = True
    for f in PENDING:
        if not any(name == f and lines > MAX_LINES for lines, name in sizes):
            print(f"NOTE: {f} is within the limit now; drop it from PENDING")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The import graph of the crate's top-level modules, and whether it has cycles.

Reads src/ (non-test code only: `#[cfg(test)]` items are skipped), collects every `crate::<module>`
path per top-level module and prints the edges, then the cycles (strongly connected components with
more than one module). Exit status 1 when there is a cycle, so CI can keep the rule:
modules import each other in one direction.

    python3 scripts/module_graph.py          # edges and cycles
    python3 scripts/module_graph.py --dot    # Graphviz
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
CRATE_PATH = re.compile(r"\bcrate::(\w+)")
LIB_PATH = re.compile(r"\bllm_quality_observer::(\w+)")


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


def top_module(path: Path) -> str:
    rel = path.relative_to(SRC)
    if len(rel.parts) == 1:
        return rel.stem
    return rel.parts[0]


def graph() -> dict:
    edges = defaultdict(set)
    for path in sorted(SRC.rglob("*.rs")):
        if path.name == "lib.rs":
            continue
        module = top_module(path)
        text = strip_test_items(strip_comments(path.read_text()))
        for m in CRATE_PATH.findall(text) + LIB_PATH.findall(text):
            if m != module:
                edges[module].add(m)
        edges.setdefault(module, set())
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


def main() -> int:
    edges = graph()
    if "--dot" in sys.argv:
        print("digraph modules {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    for a in sorted(edges):
        print(f"{a:14} -> {', '.join(sorted(edges[a])) or '(nothing of ours)'}")
    found = cycles(edges)
    if found:
        for c in found:
            print("cycle among: " + ", ".join(c))
        return 1
    print("no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())

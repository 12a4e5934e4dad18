#!/usr/bin/env bash
# Fails when two top-level modules of src/ import each other, directly or around a loop.
#
# For every top-level module (src/X.rs or src/X/), every `crate::Y` path in its non-test
# code (a file's `#[cfg(test)] mod tests` and files named *tests.rs are left out) is an
# edge X -> Y; the strongly connected components of that graph with more than one module
# are the cycles. Prints the graph's edges with `-v`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'EOF'
import os, re, sys

src = "src"
mods = sorted(
    n[:-3] if n.endswith(".rs") else n
    for n in os.listdir(src)
    if (n.endswith(".rs") and n not in ("lib.rs", "main.rs")) or os.path.isdir(os.path.join(src, n))
)

def files(m):
    if os.path.isdir(os.path.join(src, m)):
        for root, _, names in os.walk(os.path.join(src, m)):
            yield from (os.path.join(root, n) for n in names if n.endswith(".rs"))
    if os.path.isfile(os.path.join(src, m + ".rs")):
        yield os.path.join(src, m + ".rs")

test_mod = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*(pub(\(\w+\))? )?mod \w+\s*\{", re.M)
edges = {m: set() for m in mods}
for m in mods:
    for f in files(m):
        if f.endswith("tests.rs"):
            continue
        text = open(f).read()
        cut = test_mod.search(text)
        if cut:
            text = text[: cut.start()]
        for y in re.findall(r"\bcrate::(\w+)", text):
            if y != m and y in edges:
                edges[m].add(y)

if "-v" in sys.argv:
    for m in mods:
        print(f"{m} -> {', '.join(sorted(edges[m])) or '-'}")

# Tarjan's strongly connected components.
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for m in mods:
    if m not in index:
        visit(m)
cycles = [sorted(c) for c in sccs if len(c) > 1]
for c in cycles:
    inner = [f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c]
    print(f"cycle among {', '.join(c)}: {'; '.join(inner)}")
if cycles:
    sys.exit(1)
print(f"no import cycle between the {len(mods)} top-level modules")
EOF

#!/usr/bin/env python3
"""The import graph of runtime/src, file by file, and its circles.

Every `crate::…`, `super::…` or submodule path a file names (in `use` lines and in code) is an
edge to the file of the deepest module it names — except a module's edges down to its own
submodules (a folder's mod.rs and the files it is made of). Test code is left out (`tests.rs` files, a file's
`#[cfg(test)] mod tests` and what follows it). Prints each circle (strongly connected group of
files) and exits 1 when one exists outside the allowed ones.

    scripts/import-graph.py [--dot] [--allow FILE ...]

`--allow` names files whose circle is accepted (default: the backend registry,
backend/mod.rs, whose `open` names every backend that in turn implements its traits).
`--dot` prints the graph in Graphviz's format instead.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "runtime" / "src"


def module_of(path: Path) -> tuple:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def main() -> int:
    args = sys.argv[1:]
    dot = "--dot" in args
    allow = {"backend/mod.rs"}
    if "--allow" in args:
        allow = set(args[args.index("--allow") + 1 :])
    files = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if path.name == "tests.rs" or path.name.endswith("_checks.rs"):
            continue
        files[module_of(path)] = path
    edges = {m: set() for m in files}

    def add(module, found):
        # A module's own submodules are its parts, not imports: a folder's mod.rs may use
        # (and re-export) what its files define while they use what it defines.
        if found and found != module and found[: len(module)] != module:
            edges[module].add(found)

    for module, path in files.items():
        text = path.read_text()
        cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod \w+\s*\{", text)
        if cut:
            text = text[: cut.start()]
        # Comments name modules too; only code counts.
        text = re.sub(r"//[^\n]*", "", text)
        own = module
        for names in paths(text):
            if names[0] == "crate":
                target = names[1:]
            else:
                base = list(own)
                while names and names[0] == "super":
                    base = base[:-1]
                    names = names[1:]
                if names and names[0] == "self":
                    names = names[1:]
                target = tuple(base) + tuple(names)
            add(module, deepest(target, files))
        # Paths from a child module by its name (`kernels::avx2::f`, `use step::forward`).
        for m in re.finditer(r"(?<![:\w])([a-z_]\w*)((?:::\w+)+)", text):
            names = [m.group(1)] + m.group(2).split("::")[1:]
            if names[0] in ("crate", "super", "self"):
                continue
            found = deepest(tuple(own) + tuple(names), files)
            if found and len(found) > len(own):
                add(module, found)
    name = lambda m: str(files[m].relative_to(ROOT))
    if dot:
        print("digraph runtime {")
        for m, targets in sorted(edges.items()):
            for t in sorted(targets):
                print(f'  "{name(m)}" -> "{name(t)}";')
        print("}")
        return 0
    bad = 0
    for group in circles(edges):
        names = sorted(name(m) for m in group)
        allowed = any(n in allow for n in names)
        mark = "allowed" if allowed else "CIRCLE"
        bad += not allowed
        print(f"{mark}: {' ↔ '.join(names)}")
    print(f"{len(files)} files, {sum(map(len, edges.values()))} imports, {bad} circles")
    return 1 if bad else 0


def paths(text: str):
    """Every `crate::a::b` / `super::a` path in `text`, `{…}` groups expanded one level."""
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)*)(?:::\{([^{}]*)\})?", text):
        head = m.group(1).split("::")
        group = m.group(2)
        if group is None:
            yield head
            continue
        for item in group.split(","):
            item = item.strip().split(" as ")[0].split("::")
            yield head + [p for p in item if p and p != "self"] if item[0] else head


def deepest(target: tuple, files: dict):
    """The file of the longest prefix of `target` that is a module (`()` is lib.rs, whose
    re-exports are not an edge)."""
    for n in range(len(target), -1, -1):
        if tuple(target[:n]) in files:
            return tuple(target[:n])
    return None


def circles(edges: dict):
    """Strongly connected groups of more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(group)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())

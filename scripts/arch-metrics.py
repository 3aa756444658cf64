#!/usr/bin/env python3
"""Architecture metrics of src/ (no cargo-modules needed): the module graph and its cycles,
the files that import `App`, the longest functions and the deepest nesting.

    scripts/arch-metrics.py [SRC_DIR]          # default: src
    scripts/arch-metrics.py --check [SRC_DIR]  # exit 1 on an import cycle or an App import
                                               # below the composition root

Edges are the `crate::` and `super::` paths a file names (in `use` items and inline), outside
`#[cfg(test)]` modules, resolved to the file that defines the longest matching module. A
cycle is a strongly connected component of more than one file (or of more than one top-level
module, for the layer graph). Function length counts the lines from `fn` to its closing brace;
nesting counts `{` levels inside a function body (closures and struct literals included).
"""
import os
import re
import sys

ALLOWED_APP = ("app", "serve", "http", "admin", "cli", "maintenance", "tasks", "error", "lib")


def strip(text):
    """Blanks out comments, strings and char literals, keeping newlines and braces' places."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"[A-Za-z0-9_]", text[i - 1:i] or " "):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code):
    """Removes `#[cfg(test)] mod x { ... }` blocks (and `#[cfg(test)] mod x;` lines)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*([{;])", code)
        if not m:
            return code
        if m.group(3) == ";":
            code = code[:m.start()] + code[m.end():]
            continue
        depth, j = 0, m.end() - 1
        while j < len(code):
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        code = code[:m.start()] + re.sub(r"[^\n]", " ", code[m.start():j + 1]) + code[j + 1:]


def module_of(path, src):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def load(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                p = os.path.join(root, name)
                with open(p, encoding="utf-8") as f:
                    text = f.read()
                files[module_of(p, src)] = (os.path.relpath(p, src), text, drop_test_modules(strip(text)))
    return files


def resolve(mod, segs, files):
    """The file module a path names: the longest prefix of `segs` that is a file module."""
    for k in range(len(segs), 0, -1):
        if tuple(segs[:k]) in files:
            return tuple(segs[:k])
    return None


def edges(files):
    out = {m: set() for m in files}
    for mod, (_, _, code) in files.items():
        # crate:: paths, including grouped `use crate::{a::b, c}` forms.
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+|\{)", code):
            if m.group(1) == "{":
                depth, j = 0, m.end() - 1
                while j < len(code):
                    depth += {"{": 1, "}": -1}.get(code[j], 0)
                    if depth == 0:
                        break
                    j += 1
                inner = code[m.end():j]
                paths = re.findall(r"(\w+(?:::\w+)*)", re.sub(r"\{[^{}]*\}", "", inner))
                targets = [p.split("::") for p in paths]
            else:
                targets = [m.group(1).split("::")]
            for segs in targets:
                t = resolve(mod, segs, files)
                if t and t != mod:
                    out[mod].add(t)
        for m in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+|\*|\{)", code):
            ups = m.group(1).count("super::")
            # A file `a/b.rs` is module (a, b): super is (a). A `mod.rs` file is its dir's module.
            base = mod[:len(mod) - ups] if len(mod) >= ups else ()
            rest = [] if m.group(2) in ("*", "{") else m.group(2).split("::")
            t = resolve(mod, list(base) + rest, files) or (base if base in files else None)
            if t and t != mod:
                out[mod].add(t)
    return out


def sccs(graph):
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def functions(files):
    """(lines, max nesting, file, name) for every fn with a body, outside test modules."""
    out = []
    for mod, (rel, _, code) in files.items():
        for m in re.finditer(r"\bfn\s+(\w+)", code):
            # The body starts at the first `{` after the signature (not inside parens/generics).
            j, paren = m.end(), 0
            while j < len(code):
                c = code[j]
                if c in "(<[":
                    paren += 1
                elif c in ")>]":
                    paren -= 1
                elif c == ";" and paren <= 0:
                    j = -1
                    break
                elif c == "{" and paren <= 0:
                    break
                j += 1
            if j < 0 or j >= len(code):
                continue
            depth, deepest, k = 0, 0, j
            while k < len(code):
                if code[k] == "{":
                    depth += 1
                    deepest = max(deepest, depth)
                elif code[k] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            first = code.count("\n", 0, m.start()) + 1
            last = code.count("\n", 0, k) + 1
            out.append((last - first + 1, deepest - 1, rel, m.group(1), first))
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv
    src = args[0] if args else "src"
    files = load(src)
    graph = edges(files)
    name = lambda m: "::".join(m) or "crate"

    print("== import cycles between files ==")
    file_cycles = sccs(graph)
    for c in file_cycles:
        print(f"  {len(c)} files: " + ", ".join(files[m][0] for m in c))
    if not file_cycles:
        print("  none")

    top = {}
    for a, bs in graph.items():
        for b in bs:
            if a[:1] != b[:1] and a and b:
                top.setdefault(a[:1], set()).add(b[:1])
    print("== cycles between top-level modules ==")
    top_cycles = sccs(top)
    for c in top_cycles:
        print("  " + ", ".join(name(m) for m in c))
    if not top_cycles:
        print("  none")

    print("== top-level module edges ==")
    for a in sorted(top):
        print(f"  {name(a):12} -> " + ", ".join(name(b) for b in sorted(top[a])))

    print("== files importing App ==")
    app_files = sorted(
        files[m][0] for m, (_, _, code) in files.items()
        if m != ("app",) and re.search(r"crate::app::(App\b|\{[^}]*\bApp\b)|\buse\s+super::App\b", code)
    )
    below = [f for f in app_files if f.split("/")[0].removesuffix(".rs") not in ALLOWED_APP]
    print(f"  {len(app_files)} files ({len(below)} below the composition root)")
    for f in app_files:
        print(f"    {f}{'   <- below the root' if f in below else ''}")

    fns = functions(files)
    print("== 10 longest functions (lines) ==")
    for lines, _, rel, fname, first in sorted(fns, reverse=True)[:10]:
        print(f"  {lines:4}  {rel}:{first} {fname}")
    print("== deepest nesting ({ levels inside a fn body) ==")
    for lines, deep, rel, fname, first in sorted(fns, key=lambda f: (-f[1], -f[0]))[:5]:
        print(f"  {deep:4}  {rel}:{first} {fname}")

    if check and (file_cycles or top_cycles or below):
        sys.exit(1)


if __name__ == "__main__":
    main()

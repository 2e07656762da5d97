#!/usr/bin/env python3
"""unit: the engine's modules form a DAG (issue 13: no circle of calls).

A module is a .c file of engine/ with its .h (and -t.h). It depends on
another module when its .c or its own headers #include that module's
header: an include is how a C file reaches another's functions or types.
The test fails, naming the circle, when two or more modules depend on each
other round a loop. It first checks itself: a made-up circle must be found.

    module_graph.py ENGINE_DIR
"""
import os
import re
import sys
import tempfile

INCLUDE = re.compile(r'#include "([A-Za-z0-9_]+?)(?:-t)?\.h"')


def graph(d):
    mods = {f[:-2] for f in os.listdir(d) if f.endswith(".c")}
    g = {}
    for m in mods:
        deps = set()
        for name in (m + ".c", m + ".h", m + "-t.h"):
            p = os.path.join(d, name)
            if os.path.exists(p):
                deps |= set(INCLUDE.findall(open(p, encoding="utf-8").read()))
        g[m] = sorted(x for x in deps if x in mods and x != m)
    return g


def find_cycle(g):
    """A list of modules round a circle, or None."""
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in g[m]:
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def self_check():
    with tempfile.TemporaryDirectory() as t:
        for name, text in {"a.c": '#include "b.h"\n', "b.c": "", "b.h": '#include "c.h"\n',
                           "c.c": '#include "a.h"\n', "a.h": "", "c.h": ""}.items():
            open(os.path.join(t, name), "w").write(text)
        return find_cycle(graph(t)) == ["a", "b", "c", "a"]


def main():
    if not self_check():
        print("module_graph: the self-check found no made-up circle")
        print("0 passed, 1 failed")
        return 1
    g = graph(sys.argv[1])
    cycle = find_cycle(g)
    if cycle:
        print("module_graph: a circle of modules: " + " -> ".join(cycle))
        print("1 passed, 1 failed")
        return 1
    print(f"module_graph: {len(g)} modules, "
          f"{sum(len(v) for v in g.values())} dependencies, no circle")
    print("2 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

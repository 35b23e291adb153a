#!/usr/bin/env python3
"""Checks that mpchat's modules use only what the layout lets them use.

src/ has one folder per process role and two shared ones (see the Layout
section of src/lib.rs). Which folder may use which is fixed here, as the
module docs say it; this script reads every `crate::NAME` path in the code
(comments aside) and fails, naming the file and line, on a use the table
does not allow, and on any cycle between the folders. CI runs it.

    scripts/check_layout.py [SRC_DIR]
"""

import re
import sys
from pathlib import Path

# Which top-level modules each may use, besides itself. "lib" is the
# crate root (Config). The table has no cycle; the check below still
# looks for one, so that a change to the table cannot bring one in.
ALLOWED = {
    "os": set(),
    "protocol": {"os"},
    "room": {"protocol", "os"},
    "session": {"protocol", "os", "lib"},
    "hub": {"room", "protocol", "os", "lib"},
    "parent": {"hub", "session", "protocol", "os", "lib"},
}
ROOT_ITEMS = {"Config"}
PATH = re.compile(r"\bcrate::(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def module_of(path, src):
    parts = path.relative_to(src).parts
    if len(parts) == 1:
        return "lib" if parts[0] in ("lib.rs", "main.rs") else parts[0][: -len(".rs")]
    return parts[0]


def code_lines(text):
    """Each line without its comment (doc comments included)."""
    for number, line in enumerate(text.splitlines(), 1):
        yield number, line.split("//", 1)[0]


def names_used(line):
    for group, single in PATH.findall(line):
        names = [single] if single else [n.strip().split("::")[0] for n in group.split(",")]
        for name in names:
            if name and name != "self":
                yield "lib" if name in ROOT_ITEMS else name


def find_cycle(graph):
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def main():
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "src")
    problems = []
    graph = {}
    for path in sorted(src.rglob("*.rs")):
        if "bin" in path.relative_to(src).parts:
            continue  # other binaries use the library from outside
        module = module_of(path, src)
        if module == "lib":
            continue
        if module not in ALLOWED:
            problems.append(f"{path}: module '{module}' is not in the layout table of {__file__}")
            continue
        for number, line in code_lines(path.read_text()):
            for used in names_used(line):
                if used == module:
                    continue
                graph.setdefault(module, set()).add(used)
                if used not in ALLOWED[module]:
                    allowed = ", ".join(sorted(ALLOWED[module])) or "nothing outside itself"
                    problems.append(
                        f"{path}:{number}: {module} uses crate::{used}, but may use only {allowed}"
                    )
    cycle = find_cycle(graph)
    if cycle:
        problems.append("module cycle: " + " -> ".join(cycle))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check_layout: {len(graph)} modules, every use allowed, no cycle")


if __name__ == "__main__":
    main()

"""Layout rules (issue 12), checked on the source tree — no PostgreSQL needed.

- The pure core is a workspace crate without pgrx: crates/core/Cargo.toml has no pgrx dependency
  and no source file there names pgrx (so `cargo test -p audius_indexer_core` builds without it).
- No import circle among the extension's modules: the graph of `crate::<module>` references between
  the top-level modules of src/ (api, worker, follow, sweep, reader, config, errors, …) is acyclic.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".rs")


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {module_of(p) for p in SRC.rglob("*.rs")} - {"lib"}
    for p in SRC.rglob("*.rs"):
        m = module_of(p)
        if m == "lib":
            continue
        text = re.sub(r"//[^\n]*", "", p.read_text())  # references in comments do not count
        refs = set(re.findall(r"crate::(\w+)", text))
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            refs |= {part.strip().split("::")[0] for part in group.split(",") if part.strip()}
        graph.setdefault(m, set()).update(r for r in refs if r in modules and r != m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_pure_core_has_no_pgrx():
    manifest = (REPO / "crates" / "core" / "Cargo.toml").read_text()
    assert not re.search(r"^\s*pgrx", manifest, re.M), "crates/core depends on pgrx"
    offenders = [str(p) for p in (REPO / "crates" / "core" / "src").rglob("*.rs")
                 if re.search(r"\bpgrx::|use pgrx|extern crate pgrx", p.read_text())]
    assert not offenders, offenders
    assert not (SRC / "eth").exists(), "the pure Ethereum logic belongs in crates/core"


def test_no_import_circle_among_src_modules():
    graph = module_graph()
    assert {"reader", "worker", "sweep", "errors", "interrupts", "config"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
    # the leaves stay leaves
    for leaf in ("errors", "interrupts", "gucs"):
        assert graph[leaf] <= {"eth"}, (leaf, graph[leaf])


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None

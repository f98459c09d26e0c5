"""Layout rules, checked on the source tree — no PostgreSQL needed.

- The pure core is a workspace crate without pgrx: crates/core/Cargo.toml has no pgrx dependency
  and no source file there names pgrx (so `cargo test -p audius_indexer_core` builds without it).
- No import circle in any crate: the graph of `crate::<module>` references between the top-level
  modules of src/ (api, worker, follow, sweep, reader, config, errors, …) is acyclic, and so is the
  graph of the pure core's files (`crate::eth::<module>`, `super::<module>`, `crate::<module>`).
- No source file over MAX_LINES lines, its tests excluded: one idea per file.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
CORE = REPO / "crates" / "core" / "src"
# a file's own lines, before its `#[cfg(test)] mod tests`
MAX_LINES = 700


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


def core_graph() -> dict[str, set[str]]:
    """Files of the pure core as nodes ("eth/logs", "settings"); an edge for each reference to
    another file: `crate::eth::x`, `crate::eth::{x, y}`, `super::x` (inside eth/), `crate::x`."""
    nodes = {str(p.relative_to(CORE).with_suffix("")) for p in CORE.rglob("*.rs")}
    nodes -= {"lib", "eth/mod"}
    graph: dict[str, set[str]] = {n: set() for n in nodes}
    for p in CORE.rglob("*.rs"):
        me = str(p.relative_to(CORE).with_suffix(""))
        if me not in nodes:
            continue
        # the file's own code: its unit tests may use whatever they test against
        own = "\n".join(p.read_text().split("\n")[:own_lines(p)])
        text = re.sub(r"//[^\n]*", "", own)
        refs = {f"eth/{m}" for m in re.findall(r"crate::eth::(\w+)", text)}
        for group in re.findall(r"crate::eth::\{([^}]*)\}", text):
            refs |= {"eth/" + part.strip().split("::")[0] for part in group.split(",") if part.strip()}
        if me.startswith("eth/"):
            refs |= {f"eth/{m}" for m in re.findall(r"\bsuper::(\w+)", text)}
        refs |= set(re.findall(r"crate::(\w+)", text))
        graph[me] = {r for r in refs if r in nodes and r != me}
    return graph


def own_lines(path: Path) -> int:
    """Lines of a file before its unit tests (`#[cfg(test)]` followed by `mod tests`)."""
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and lines[i + 1].startswith("mod tests"):
            return i
    return len(lines)


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


def test_no_import_circle_in_the_core():
    graph = core_graph()
    assert {"eth/logs", "eth/events", "eth/retry", "eth/transport", "eth/blocking"} <= set(graph)
    assert "eth/blocking" in graph["eth/retry"], graph["eth/retry"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in crates/core: " + " -> ".join(cycle)


def test_core_graph_sees_every_kind_of_reference(tmp_path):
    # the reference forms the graph must read, on a file that uses each (checked on the real tree
    # above; here the regexes are held against a sample)
    sample = "use crate::eth::{abi, logs::Log};\nuse super::retry::execute;\nfn f() { crate::settings::x(); }"
    refs = {f"eth/{m}" for m in re.findall(r"crate::eth::(\w+)", sample)}
    for group in re.findall(r"crate::eth::\{([^}]*)\}", sample):
        refs |= {"eth/" + part.strip().split("::")[0] for part in group.split(",") if part.strip()}
    refs |= {f"eth/{m}" for m in re.findall(r"\bsuper::(\w+)", sample)}
    refs |= set(re.findall(r"crate::(\w+)", sample))
    assert {"eth/abi", "eth/logs", "eth/retry", "settings"} <= refs


def test_one_idea_per_file():
    files = [p for root in (SRC, CORE) for p in root.rglob("*.rs")]
    long = {str(p.relative_to(REPO)): own_lines(p) for p in files if own_lines(p) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (tests excluded): {long}"


def test_own_lines_stops_at_the_unit_tests(tmp_path):
    f = tmp_path / "x.rs"
    f.write_text("fn a() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n")
    assert own_lines(f) == 2
    f.write_text("fn a() {}\n#[cfg(test)]\nfn helper() {}\n")
    assert own_lines(f) == 4

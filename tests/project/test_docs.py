"""Docs coverage: the reference docs match the code.

- every setting defined in src/gucs.rs is documented in docs/settings.md, every documented setting
  exists (in src/gucs.rs and in pg_settings of a server with the library loaded), and its documented
  context matches pg_settings.context;
- every function, procedure, view and table of schema audius_indexer (internal `_` helpers excepted)
  appears in docs/sql-reference.md;
- the README stays a front door (≤ 400 lines) and its Layout section names every src/ module.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUCS_RS = REPO / "src" / "gucs.rs"
SETTINGS_MD = REPO / "docs" / "settings.md"
SQL_REF_MD = REPO / "docs" / "sql-reference.md"
README = REPO / "README.md"


def gucs_in_code() -> set[str]:
    return set(re.findall(r'c"(audius_indexer\.[a-z0-9_]+)"', GUCS_RS.read_text()))


def documented_settings() -> dict[str, str]:
    """name → the context column of its row in the settings table."""
    rows = {}
    for line in SETTINGS_MD.read_text().splitlines():
        m = re.match(r"\|\s*`(audius_indexer\.[a-z0-9_]+)`\s*\|[^|]*\|\s*([^|]*)\|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_every_setting_is_documented_and_every_documented_setting_exists(cluster):
    code = gucs_in_code()
    docs = documented_settings()
    assert len(code) >= 20
    assert code - set(docs) == set(), f"settings without a row in docs/settings.md: {sorted(code - set(docs))}"
    assert set(docs) - code == set(), f"documented settings that do not exist: {sorted(set(docs) - code)}"
    with cluster.connect("audius") as conn:
        live = dict(conn.execute("SELECT name, context FROM pg_settings WHERE name LIKE 'audius_indexer.%'").fetchall())
    assert set(live) == code, f"pg_settings vs src/gucs.rs: {sorted(set(live) ^ code)}"
    wrong = {n: (docs[n], live[n]) for n in code if not docs[n].startswith(live[n])}
    assert not wrong, f"documented context differs from pg_settings.context: {wrong}"


def test_every_sql_object_is_in_the_sql_reference(cluster):
    text = SQL_REF_MD.read_text()
    with cluster.connect("audius") as conn:
        funcs = [r[0] for r in conn.execute(
            "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'audius_indexer'::regnamespace "
            "AND proname NOT LIKE '\\_%' ORDER BY 1")]
        rels = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'audius_indexer'::regnamespace "
            "AND relkind IN ('r', 'v') ORDER BY 1")]
    assert len(funcs) >= 15 and len(rels) >= 8
    missing_f = [f for f in funcs if not re.search(rf"`{re.escape(f)}\(", text)
                 and not re.search(rf"`CALL {re.escape(f)}\(", text)]
    missing_r = [r for r in rels if not re.search(rf"\b{re.escape(r)}\b", text)]
    assert not missing_f, f"functions missing from docs/sql-reference.md: {missing_f}"
    assert not missing_r, f"tables/views missing from docs/sql-reference.md: {missing_r}"


def test_readme_is_a_front_door_and_its_layout_matches_the_tree():
    lines = README.read_text().splitlines()
    assert len(lines) <= 400, f"README has {len(lines)} lines"
    layout = README.read_text().split("## Layout", 1)[1]
    modules = sorted({p.relative_to(REPO / "src").parts[0].removesuffix(".rs")
                      for p in (REPO / "src").rglob("*.rs")} - {"lib"})
    missing = [m for m in modules if m not in layout]
    assert not missing, f"src/ modules not named in the README Layout section: {missing}"
    for d in ("sql/", "tests/", "bench/", "docs/"):
        assert d in layout, d

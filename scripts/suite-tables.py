"""Rewrites the suite tables of docs/reliability.md from the tables the R-suites record on each
run (tests/.build/suites/*.md), so the docs show what was observed, not what was hoped.
Usage (after `make test` or `pytest tests/test_r*.py`): .venv/bin/python scripts/suite-tables.py
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
suites = sorted((root / "tests/.build/suites").glob("*.md"))
if not suites:
    sys.exit("no recorded suite tables in tests/.build/suites (run the R-suites first)")
begin, end = "<!-- suites:begin -->", "<!-- suites:end -->"
parts = [begin, ""]
summary = ["| suite | cases tried | passed | runtime |", "|---|---|---|---|"]
for f in suites:
    text = f.read_text().strip()
    title = text.splitlines()[0].lstrip("# ").strip()
    m = re.search(r"(\d+) cases tried, (\d+) passed, ([\d.]+ s)", text)
    summary.append(f"| {title} | {m.group(1)} | {m.group(2)} | {m.group(3)} |" if m else f"| {title} | ? | ? | ? |")
    parts += [text.replace("### ", "#### ", 1), ""]
parts[2:2] = summary + [""]
parts.append(end)
readme = (root / "docs/reliability.md").read_text()
if begin not in readme or end not in readme:
    sys.exit(f"docs/reliability.md lacks the {begin} … {end} markers")
new = "\n".join(parts)
readme = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: new, readme, flags=re.S)
(root / "docs/reliability.md").write_text(readme)
print(f"docs/reliability.md: {len(suites)} suite tables")

"""Rewrites the suite tables of docs/reliability.md from the tables the reliability suites record on
each run (tests/.build/suites/*.md), so the docs show what was observed, not what was hoped.

`make integration` clears tests/.build/suites before pytest and runs this after it, so the tables are
those of the run that just finished. Fails (exit 1, nothing written) when a suite the document
listed is missing from the run, or a recorded table has no "N cases tried, N passed, T s" line.
Usage: .venv/bin/python scripts/suite-tables.py
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
doc = root / "docs/reliability.md"
suites = sorted((root / "tests/.build/suites").glob("*.md"))
if not suites:
    sys.exit("no recorded suite tables in tests/.build/suites (run the reliability suites first)")
begin, end = "<!-- suites:begin -->", "<!-- suites:end -->"
text_before = doc.read_text()
if begin not in text_before or end not in text_before:
    sys.exit(f"docs/reliability.md lacks the {begin} … {end} markers")
old_block = text_before.split(begin, 1)[1].split(end, 1)[0]
summary_rows = old_block.split("| suite | cases tried", 1)[-1].split("\n\n", 1)[0]
listed = set(re.findall(r"^\| ([^|]+?) \| (?:\d+|\?) \|", summary_rows, re.M))

parts = [begin, ""]
summary = ["| suite | cases tried | passed | runtime |", "|---|---|---|---|"]
titles, problems = set(), []
for f in suites:
    text = f.read_text().strip()
    title = text.splitlines()[0].lstrip("# ").strip()
    titles.add(title)
    m = re.search(r"(\d+) cases tried, (\d+) passed, ([\d.]+ s)", text)
    if not m:
        problems.append(f"{f.name}: no 'N cases tried, N passed, T s' line")
        continue
    summary.append(f"| {title} | {m.group(1)} | {m.group(2)} | {m.group(3)} |")
    parts += [text.replace("### ", "#### ", 1), ""]
missing = sorted(listed - titles)
if missing:
    problems.append("suites listed in docs/reliability.md but not recorded by this run: " + "; ".join(missing))
if problems:
    sys.exit("scripts/suite-tables.py: " + "\n".join(problems))
parts[2:2] = summary + [""]
parts.append(end)
new = "\n".join(parts)
doc.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: new, text_before, flags=re.S))
print(f"docs/reliability.md: {len(suites)} suite tables")

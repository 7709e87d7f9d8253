"""Summarise a cargo-mutants run (`make mutants`) as markdown.

    python python/mutants_report.py target/mutants/mutants.out docs/mutants.md

Reads cargo-mutants' outcome lists (caught.txt, missed.txt, timeout.txt,
unviable.txt; one mutant per line, "file:line:col: replace X with Y") and
writes counts per file plus every survivor. Why a survivor cannot change
results is written by hand in docs/mutants_survivors.json ({mutant line:
reason}); survivors without a reason are marked as such, so they stand out.
The report is appended to (one section per run), so runs over different
files add up.
"""

import collections
import datetime
import json
import os
import sys

KINDS = ["caught", "missed", "timeout", "unviable"]


def read(out_dir):
    lists = {}
    for kind in KINDS:
        path = os.path.join(out_dir, f"{kind}.txt")
        with open(path) as f:
            lists[kind] = [line.strip() for line in f if line.strip()]
    return lists


def main() -> int:
    if len(sys.argv) != 3:
        raise SystemExit("usage: mutants_report.py MUTANTS_OUT_DIR REPORT.md")
    out_dir, report = sys.argv[1], sys.argv[2]
    lists = read(out_dir)
    reasons_path = os.path.join(os.path.dirname(report), "mutants_survivors.json")
    reasons = {}
    if os.path.exists(reasons_path):
        with open(reasons_path) as f:
            reasons = json.load(f)
    per_file = collections.defaultdict(collections.Counter)
    for kind, lines in lists.items():
        for line in lines:
            per_file[line.split(":", 1)[0]][kind] += 1
    lines = [f"## Run of {datetime.date.today().isoformat()}: {', '.join(sorted(per_file))}", ""]
    lines += ["| file | mutants | caught | missed | timeout | unviable |", "|---|---|---|---|---|---|"]
    for name in sorted(per_file):
        c = per_file[name]
        lines.append(f"| `{name}` | {sum(c.values())} | " + " | ".join(str(c[k]) for k in KINDS) + " |")
    survivors = lists["missed"] + lists["timeout"]
    lines += ["", f"Survivors ({len(survivors)}):", ""]
    if not survivors:
        lines.append("none: every viable mutant was caught by a test.")
    for s in survivors:
        why = reasons.get(s, "**no reason recorded: a test is missing**")
        lines.append(f"- `{s}`: {why}")
    lines.append("")
    new = not os.path.exists(report)
    with open(report, "a") as f:
        if new:
            f.write("# Mutation testing (cargo-mutants)\n\n"
                    "`make mutants` (optionally `MUTATE=glob`) mutates the physics modules one\n"
                    "change at a time and runs the tests named in the Makefile (`MUTANTS_TESTS`);\n"
                    "a caught mutant made a test fail, a missed one did not. Sections below are\n"
                    "appended by `python/mutants_report.py`, one per run.\n\n")
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    missing = [s for s in survivors if s not in reasons]
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

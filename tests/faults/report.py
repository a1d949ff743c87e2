"""The fault table: one row per scenario, printed at the end of the session.

After a full run the table goes to build/faults/table.md (an ignored folder); with
FAULTS_PUBLISH=1 it also replaces the table in the tracked docs/reliability.md, between its
markers. A scenario that could not run (the disk-full one without root) has its row marked
"not run": its old figures never stay under a fresh date. Rows of scenarios this run did not
select (a partial re-run, e.g. `-k`) keep their earlier figures, and the stamp says so.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
OUTPUT = ROOT / "build" / "faults" / "table.md"
START, END = "<!-- fault-table:start -->", "<!-- fault-table:end -->"
HEADER = (
    "| # | scenario | jobs | faults | jobs lost | duplicate executions "
    "| time to recover | invariants |\n|---|---|---:|---|---:|---:|---:|---|"
)
NOT_RUN = "not run"


@dataclass(frozen=True)
class Row:
    number: int
    scenario: str
    jobs: int
    faults: str
    lost: int
    duplicates: int
    recover_s: float | None
    invariants: str = "hold"  # or what was violated; "not run: why" for a scenario not run

    @classmethod
    def not_run(cls, number: int, scenario: str, why: str) -> Row:
        """The row of a scenario this machine cannot run (no figures)."""
        return cls(number, scenario, 0, "–", 0, 0, None, f"{NOT_RUN}: {why}")

    def markdown(self) -> str:
        if self.invariants.startswith(NOT_RUN):
            return f"| {self.number} | {self.scenario} | – | – | – | – | – | {self.invariants} |"
        recover = "n/a" if self.recover_s is None else f"{self.recover_s:.1f} s"
        return (
            f"| {self.number} | {self.scenario} | {self.jobs} | {self.faults} | "
            f"{self.lost} | {self.duplicates} | {recover} | {self.invariants} |"
        )


def table(rows: list[Row]) -> str:
    return "\n".join([HEADER, *(r.markdown() for r in sorted(rows, key=lambda r: r.number))])


def full_table(rows: list[Row], doc_text: str) -> str:
    """This run's rows, the doc's rows of the scenarios it did not select, and the stamp."""
    _, rest = doc_text.split(START, 1)
    old, _ = rest.split(END, 1)
    kept = {
        int(m.group(1)): line for line in old.splitlines() if (m := re.match(r"\| (\d+) \|", line))
    }
    for row in rows:
        kept[row.number] = row.markdown()
    run = "Last full run"
    if set(kept) - {row.number for row in rows}:
        numbers = ", ".join(str(n) for n in sorted(row.number for row in rows))
        run = f"Scenarios {numbers} re-run (the other rows are from an earlier full run)"
    stamp = (
        f"{run}: {time.strftime('%Y-%m-%d %H:%M')}, {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}."
    )
    return "\n".join([HEADER, *(kept[n] for n in sorted(kept)), "", stamp])


def write_table(
    rows: list[Row], *, publish: bool = False, doc: Path = DOC, output: Path = OUTPUT
) -> list[Path]:
    """Write the table to ``output``; with ``publish`` also into ``doc``. Returns the paths."""
    text = doc.read_text("utf-8")
    body = full_table(rows, text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(body + "\n", "utf-8")
    if not publish:
        return [output]
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    doc.write_text(f"{before}{START}\n{body}\n{END}{after}", "utf-8")
    return [output, doc]

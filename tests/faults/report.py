"""The fault table: one row per scenario run, printed at the end of the session and, after a
full run, written into docs/reliability.md between its table markers."""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
START, END = "<!-- fault-table:start -->", "<!-- fault-table:end -->"
HEADER = (
    "| # | scenario | jobs | faults | jobs lost | duplicate executions "
    "| time to recover | invariants |\n|---|---|---:|---|---:|---:|---:|---|"
)


@dataclass(frozen=True)
class Row:
    number: int
    scenario: str
    jobs: int
    faults: str
    lost: int
    duplicates: int
    recover_s: float | None
    invariants: str = "hold"  # or what was violated

    def markdown(self) -> str:
        recover = "n/a" if self.recover_s is None else f"{self.recover_s:.1f} s"
        return (
            f"| {self.number} | {self.scenario} | {self.jobs} | {self.faults} | "
            f"{self.lost} | {self.duplicates} | {recover} | {self.invariants} |"
        )


def table(rows: list[Row]) -> str:
    return "\n".join([HEADER, *(r.markdown() for r in sorted(rows, key=lambda r: r.number))])


def write_doc(rows: list[Row], doc: Path = DOC) -> None:
    """Replace the table in the doc; rows of scenarios this run skipped are kept."""
    text = doc.read_text("utf-8")
    before, rest = text.split(START, 1)
    old, after = rest.split(END, 1)
    kept = {
        int(m.group(1)): line for line in old.splitlines() if (m := re.match(r"\| (\d+) \|", line))
    }
    for row in rows:
        kept[row.number] = row.markdown()
    lines = [HEADER, *(kept[n] for n in sorted(kept))]
    run = "Last full run"
    if set(kept) - {row.number for row in rows}:
        numbers = ", ".join(str(n) for n in sorted(row.number for row in rows))
        run = f"Scenarios {numbers} re-run (the other rows are from an earlier full run)"
    stamp = (
        f"{run}: {time.strftime('%Y-%m-%d %H:%M')}, {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}."
    )
    doc.write_text(f"{before}{START}\n{chr(10).join(lines)}\n\n{stamp}\n{END}{after}", "utf-8")

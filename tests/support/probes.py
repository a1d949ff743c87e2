"""The security probes of issue 13 and their table (docs/reliability.md, "Security probes").

`PROBES` is the catalogue: what each probe does and what it must find. The module
`tests/integration/test_security_probes.py` has one test per probe (`test_<key>`), which
asserts the expected outcome against real processes and records what it measured. At the end
of that module the table goes to build/probes/table.md (ignored); with PROBES_PUBLISH=1, and
only when every probe passed, it also replaces the table in docs/reliability.md between its
markers. `tests/unit/test_probe_table.py` checks that the doc lists exactly these probes.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
OUTPUT = ROOT / "build" / "probes" / "table.md"
START, END = "<!-- probe-table:start -->", "<!-- probe-table:end -->"
HEADER = "| # | finding | probe | expected | result |\n|---|---:|---|---|---|"
NOT_RUN = "not run"


@dataclass(frozen=True)
class Probe:
    key: str  # the test is test_<key>
    finding: int  # the finding of issue 13 it checks
    probe: str
    expected: str


PROBES: tuple[Probe, ...] = (
    Probe(
        "heavy_search_vs_health",
        1,
        "two of the heaviest searches the API allows (500 prefix comparisons on 1,000-tag "
        "lists, a terms aggregation) while `/api/health` and a get are timed",
        "health and get within 100 ms; each search stopped at its budget, 503 in our words",
    ),
    Probe(
        "idle_and_slow_connections",
        2,
        "a connection that sends nothing; one that trickles its headers a byte at a time",
        "the first closed after --idle-timeout, the second answered 408",
    ),
    Probe(
        "beyond_max_connections",
        2,
        "--max-connections idle connections, then one more request",
        "503 at once (under 1 s); room again once the idle ones are closed",
    ),
    Probe(
        "malformed_filters",
        3,
        "filters nested 30 deep, 1,000 comparisons, 12,000 values over two filters, an "
        "orderby of 3,000 attributes; 10,000 `or` of one attribute",
        "a 400 in our words for each (no database text), the `or` run answered; "
        "no ERROR or traceback logged",
    ),
    Probe(
        "login_throttling",
        4,
        "an anonymous client guesses the admin key's secret 8 times from 127.0.0.2, then "
        "the right secret is sent from 127.0.0.2 and from a clean 127.0.0.3",
        "403 five times, then 429 for the guessing address only; 201 from the clean one",
    ),
    Probe(
        "file_modes_under_umask_0",
        5,
        "the job API started under umask 000; a job added",
        "database, -wal, -shm and admin credentials 0600",
    ),
    Probe(
        "short_and_chunked_bodies",
        6,
        "a POST whose body is shorter than its Content-Length; a chunked POST",
        "400 in our words, nothing added; the chunked job added (201)",
    ),
    Probe(
        "wrong_content_type",
        7,
        "a logged-in POST of a JSON job as text/plain and with no content type",
        "415, nothing added",
    ),
    Probe(
        "cross_site_request",
        7,
        "a body-less cancel with the admin's cookie and Sec-Fetch-Site: cross-site",
        "403, the job still QUEUED",
    ),
    Probe(
        "host_header_vs_base_uri",
        7,
        "the cloud entry point asked with Host: attacker.example.com",
        "base-uri is the configured --public-url",
    ),
    Probe(
        "pull_job_in_queue",
        8,
        "a hand-made queue entry holding a pull-mode job's id, an executor running",
        "the entry consumed, the job not run (still QUEUED), logged",
    ),
    Probe(
        "non_admin_version_edit",
        8,
        "a user with edit-data on a job sets `version: 99`",
        "403, version unchanged",
    ),
    Probe(
        "newer_version_job",
        8,
        "a job of version 99 (an admin may set it), an executor with "
        "--newer-version-max-releases 1",
        "FAILED saying no engine took it; queue empty",
    ),
    Probe(
        "entry_with_children",
        8,
        "a queue entry with a child node, then a job behind it",
        "the entry and its taken node removed; the job behind it SUCCESS",
    ),
)


def row(number: int, probe: Probe, result: str | None) -> str:
    return (
        f"| {number} | {probe.finding} | {probe.probe} | {probe.expected} | "
        f"{NOT_RUN if result is None else result} |"
    )


def table(results: dict[str, str]) -> str:
    """The table of every probe; one without a result (failed or not selected) says so."""
    rows = [row(n, p, results.get(p.key)) for n, p in enumerate(PROBES, 1)]
    stamp = (
        f"Run: {time.strftime('%Y-%m-%d %H:%M')}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}."
    )
    return "\n".join([HEADER, *rows, "", stamp])


def documented(doc_text: str) -> list[tuple[str, str]]:
    """(probe, expected) of each row of the doc's table, in order."""
    _, rest = doc_text.split(START, 1)
    body, _ = rest.split(END, 1)
    rows = [line for line in body.splitlines() if re.match(r"\| \d+ \|", line)]
    return [(cells[2].strip(), cells[3].strip()) for cells in (r.split(" | ") for r in rows)]


def write_table(
    results: dict[str, str], *, publish: bool = False, doc: Path = DOC, output: Path = OUTPUT
) -> list[Path]:
    """Write the table to `output`; also into `doc` when asked and every probe has its
    result (a table with a probe not run is never published). Returns the paths written."""
    body = table(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(body + "\n", "utf-8")
    if not publish or any(p.key not in results for p in PROBES):
        return [output]
    text = doc.read_text("utf-8")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    doc.write_text(f"{before}{START}\n{body}\n{END}{after}", "utf-8")
    return [output, doc]

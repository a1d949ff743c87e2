"""The security probe table (tests/support/probes.py): docs/reliability.md lists exactly the
probes the probe module runs; a probe without a result is marked so; the tracked doc changes
only when published with every probe passed."""

from __future__ import annotations

from pathlib import Path

from tests.support.probes import DOC, END, NOT_RUN, PROBES, START, documented, write_table

OLD_DOC = f"""# Reliability

Intro.

{START}
old table
{END}

Outro.
"""


def test_the_doc_lists_exactly_the_probes_run() -> None:
    assert documented(DOC.read_text("utf-8")) == [(p.probe, p.expected) for p in PROBES]


def test_a_probe_without_result_is_marked_not_run(tmp_path: Path) -> None:
    doc, output = tmp_path / "reliability.md", tmp_path / "build" / "table.md"
    doc.write_text(OLD_DOC)
    results = {p.key: f"seen {p.key}" for p in PROBES[1:]}
    assert write_table(results, publish=True, doc=doc, output=output) == [output]
    rows = [line for line in output.read_text().splitlines() if line.startswith("| 1 |")]
    assert rows == [
        f"| 1 | {PROBES[0].finding} | {PROBES[0].probe} | {PROBES[0].expected} | {NOT_RUN} |"
    ]
    assert doc.read_text() == OLD_DOC  # a probe missing: never published


def test_publishing_replaces_only_the_table_of_the_doc(tmp_path: Path) -> None:
    doc, output = tmp_path / "reliability.md", tmp_path / "table.md"
    doc.write_text(OLD_DOC)
    results = {p.key: f"seen {p.key}" for p in PROBES}
    assert write_table(results, doc=doc, output=output) == [output]
    assert doc.read_text() == OLD_DOC  # not asked
    assert write_table(results, publish=True, doc=doc, output=output) == [output, doc]
    text = doc.read_text()
    assert text.startswith("# Reliability\n\nIntro.\n") and text.endswith(f"{END}\n\nOutro.\n")
    assert "old table" not in text
    assert documented(text) == [(p.probe, p.expected) for p in PROBES]
    assert all(f"seen {p.key} |" in text for p in PROBES)

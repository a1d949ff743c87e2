"""The fault table's report (tests/faults/report.py): a scenario that did not run is marked
so, never shown with an old run's figures; the tracked doc changes only when published."""

from __future__ import annotations

from pathlib import Path

from tests.faults.report import END, HEADER, NOT_RUN, START, Row, write_table

OLD_DOC = f"""# Reliability

Intro.

{START}
{HEADER}
| 1 | leader killed | 1000 | kill -9 | 0 | 0 | 1.1 s | hold |
| 7 | disk full under the job API | 1000 | filled (455 adds refused) | 0 | 59 | 0.0 s | hold |

Last full run: 2020-01-01 00:00, Linux x86_64, Python 3.11.0.
{END}

Outro.
"""


def fresh_row() -> Row:
    return Row(1, "leader killed", 1000, "kill -9 (new)", 0, 3, 2.5)


def test_a_scenario_that_could_not_run_is_marked_not_run(tmp_path: Path) -> None:
    doc, output = tmp_path / "reliability.md", tmp_path / "build" / "table.md"
    doc.write_text(OLD_DOC)
    reason = "mounting a small tmpfs needs root"
    rows = [fresh_row(), Row.not_run(7, "disk full under the job API", reason)]
    assert write_table(rows, doc=doc, output=output) == [output]
    table = output.read_text()
    assert "| 1 | leader killed | 1000 | kill -9 (new) | 0 | 3 | 2.5 s | hold |" in table
    [row7] = [line for line in table.splitlines() if line.startswith("| 7 |")]
    assert row7 == f"| 7 | disk full under the job API | – | – | – | – | – | {NOT_RUN}: {reason} |"
    assert "Last full run: " in table and "2020-01-01" not in table
    assert doc.read_text() == OLD_DOC  # not published: the tracked doc is left alone


def test_a_partial_run_keeps_the_other_rows_and_says_so(tmp_path: Path) -> None:
    doc, output = tmp_path / "reliability.md", tmp_path / "table.md"
    doc.write_text(OLD_DOC)
    write_table([fresh_row()], doc=doc, output=output)
    table = output.read_text()
    assert "| 7 | disk full under the job API | 1000 | filled (455 adds refused) |" in table
    assert "Scenarios 1 re-run (the other rows are from an earlier full run): " in table


def test_publishing_replaces_only_the_table_of_the_doc(tmp_path: Path) -> None:
    doc, output = tmp_path / "reliability.md", tmp_path / "table.md"
    doc.write_text(OLD_DOC)
    rows = [fresh_row(), Row.not_run(7, "disk full under the job API", "no root")]
    assert write_table(rows, publish=True, doc=doc, output=output) == [output, doc]
    text = doc.read_text()
    assert text.startswith("# Reliability\n\nIntro.\n") and text.endswith(f"{END}\n\nOutro.\n")
    assert "kill -9 (new)" in text and "2020-01-01" not in text and "455" not in text
    assert output.read_text().strip() in text

"""The benchmarks' publishing helpers: generated sections of docs/benchmarks.md and the PNG
plots. No benchmark runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import __main__ as runner
from bench import plots, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

DOC = """# Title

Prose before.

<!-- bench:alpha -->
old alpha
<!-- /bench:alpha -->

Prose between.

<!-- bench:beta -->
old beta
<!-- /bench:beta -->

Prose after.
"""


def test_replace_section_replaces_only_its_own_body() -> None:
    updated = report.replace_section(DOC, "alpha", "| new | table |\n")
    assert "old alpha" not in updated
    assert "<!-- bench:alpha -->\n| new | table |\n<!-- /bench:alpha -->" in updated
    # Everything else is untouched, byte for byte.
    assert updated.replace("| new | table |", "old alpha") == DOC


def test_replace_section_is_idempotent() -> None:
    once = report.replace_section(DOC, "beta", "new beta")
    assert report.replace_section(once, "beta", "new beta") == once


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all",
        "<!-- bench:alpha --> only the start",
        "<!-- /bench:alpha --> end first <!-- bench:alpha -->",
        DOC + "<!-- bench:alpha -->\n<!-- /bench:alpha -->\n",
    ],
)
def test_replace_section_refuses_a_bad_document(text: str) -> None:
    with pytest.raises(ValueError):
        report.replace_section(text, "alpha", "body")


def test_section_names_in_order() -> None:
    assert report.section_names(DOC) == ["alpha", "beta"]


def test_section_has_command_tables_and_image_links() -> None:
    body = report.section(
        ".venv/bin/python -m bench.x --quick",
        "0.5, 0.4, 0.3",
        "| a | b |\n| --- | ---: |\n| 1 | 2 |",
        [("takes/s against depth", Path("/somewhere/x-plot.png"))],
    )
    assert "```\n.venv/bin/python -m bench.x --quick\n```" in body
    assert "| 1 | 2 |" in body
    assert "![takes/s against depth](img/x-plot.png)" in body
    assert "load average 0.5, 0.4, 0.3 at the start" in body


def test_section_says_whether_the_sizes_are_the_defaults() -> None:
    assert report.default_sizes(".venv/bin/python -m bench.executor --publish")
    assert report.default_sizes(".venv/bin/python -m bench.executor")
    assert not report.default_sizes(".venv/bin/python -m bench.executor --jobs 300 --publish")
    # Choosing what is measured (or how long to wait for quiet) keeps the default sizes.
    both = ".venv/bin/python -m bench.api --db both --replicas 2 --quiet-wait=10 --profile"
    assert report.default_sizes(both)
    assert not report.default_sizes(".venv/bin/python -m bench.api --db both --jobs 20000")
    quick = report.section(".venv/bin/python -m bench.x --jobs 3", "0.1", "table")
    full = report.section(".venv/bin/python -m bench.x --publish", "0.1", "table")
    assert "not the default sizes" in quick and "; default sizes." in full


def test_command_line_quotes_arguments() -> None:
    assert (
        report.command_line("bench.api", ["--jobs", "10000", "--name", "a b"])
        == ".venv/bin/python -m bench.api --jobs 10000 --name 'a b'"
    )


def test_publish_copies_images_and_rewrites_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    image = tmp_path / "results" / "alpha.png"
    image.parent.mkdir()
    image.write_bytes(PNG_MAGIC + b"data")
    images = tmp_path / "img"
    report.publish("alpha", "fresh", [image], doc=doc, image_dir=images)
    assert (images / "alpha.png").read_bytes() == image.read_bytes()
    assert "<!-- bench:alpha -->\nfresh\n<!-- /bench:alpha -->" in doc.read_text()


def test_publish_without_the_section_changes_nothing(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    image = tmp_path / "gamma.png"
    image.write_bytes(PNG_MAGIC)
    with pytest.raises(SystemExit, match="bench:gamma"):
        report.publish("gamma", "fresh", [image], doc=doc, image_dir=tmp_path / "img")
    assert doc.read_text() == DOC
    assert not (tmp_path / "img").exists()


def test_the_published_document_has_a_section_for_every_benchmark() -> None:
    text = report.DOC.read_text("utf-8")
    own_pages = set(report.OWN_PAGES)
    assert sorted(report.section_names(text)) == sorted(set(runner.modules()) - own_pages)
    for name in runner.modules():
        doc = report.OWN_PAGES.get(name, report.DOC)
        report.replace_section(doc.read_text("utf-8"), name, "x")  # one pair of markers each


def test_runner_lists_benchmarks_not_helpers_and_passes_quick_sizes() -> None:
    assert runner.modules() == [
        "peers",
        "api",
        "api_stores",
        "capacity",
        "dashboard",
        "delays",
        "distributor",
        "executor",
        "nuvla_mix",
        "queue_takes",
        "waiters",
    ]
    assert set(runner.QUICK) == set(runner.modules())
    options = runner.parse_args(["--quick", "--publish", "executor"])
    assert options.names == ["executor"] and options.quick and options.publish
    with pytest.raises(SystemExit):
        runner.parse_args(["plots"])


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) > 5000


def test_takes_vs_depth_plot(tmp_path: Path) -> None:
    path = plots.takes_vs_depth(
        tmp_path / "q.png",
        [1000, 100_000, 1_000_000],
        [880, 752, 1165],
        [(800, 900), (700, 800), (1100, 1200)],
        [134, 6.0, 0.5],
        goal=1000,
    )
    assert _is_png(path)


def test_throughput_plot_is_the_same_file_for_the_same_numbers(tmp_path: Path) -> None:
    args = ([1, 10, 50, 100, 200], [8.7, 85, 150, 157, 155], 0.1)
    first = plots.throughput_vs_concurrency(tmp_path / "a.png", *args, goal=400)
    second = plots.throughput_vs_concurrency(tmp_path / "b.png", *args, goal=400)
    assert _is_png(first)
    # No date or version in the file: a re-run with equal numbers leaves the docs unchanged.
    assert first.read_bytes() == second.read_bytes()


def test_latency_cdf_plot(tmp_path: Path) -> None:
    ours = [10 + i * 0.1 for i in range(200)]
    path = plots.latency_cdf(
        tmp_path / "lat.png",
        {"concurrency 100": ours, "baseline": [12.0, 14.0, 30.0]},
        {"p50": 20.0, "p99": 29.8},
        goal_ms=50,
    )
    assert _is_png(path)

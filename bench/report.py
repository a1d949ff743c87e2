"""Publishing a benchmark's results: its section of docs/benchmarks.md and its plots.

Every benchmark writes its table and PNG plots to bench/results/ (gitignored). With
``--publish`` it also copies the plots to docs/img/ and replaces its generated section of
docs/benchmarks.md, the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
the prose around the markers is kept.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"
IMAGES = REPO / "docs" / "img"
# Benchmarks whose section lives on a page of its own, not in docs/benchmarks.md.
OWN_PAGES = {"capacity": REPO / "docs" / "capacity.md"}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with what lies between the markers of section `name` replaced by `body`.

    Raises ValueError when the section's markers are missing, out of order or repeated: a
    benchmark never guesses where its results belong."""
    start, end = _markers(name)
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {start} and one {end} in the document")
    head, rest = text.split(start)
    if end not in rest:
        raise ValueError(f"{end} comes before {start} in the document")
    _, tail = rest.split(end)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def section_names(text: str) -> list[str]:
    """The generated sections a document holds, in order (a marker stands on its own line;
    one quoted in prose is not a section)."""
    return re.findall(r"^<!-- bench:([\w-]+) -->$", text, flags=re.MULTILINE)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def machine() -> str:
    """One line on the machine: CPUs, Python, kernel."""
    return (
        f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run, as the docs show it."""
    return " ".join([".venv/bin/python", "-m", module, *map(shlex.quote, argv)]).strip()


# Options that choose what is measured or how long to wait for a quiet machine, not how
# much: with them a run still has its default sizes. Each takes one value.
NEUTRAL_OPTIONS = frozenset({"--db", "--replicas", "--quiet-wait"})


def default_sizes(command: str) -> bool:
    """Whether `command` (see command_line) runs its benchmark with its default sizes."""
    words = shlex.split(command)
    options = words[words.index("-m") + 2 :] if "-m" in words else words
    rest = iter(options)
    for word in rest:
        name = word.split("=", 1)[0]
        if name in NEUTRAL_OPTIONS:
            if "=" not in word:
                next(rest, None)
        elif word not in ("--publish", "--profile"):
            return False
    return True


def section(
    command: str, load_at_start: str, tables: str, images: Sequence[tuple[str, Path]] = ()
) -> str:
    """The generated block of one benchmark: when, where, how, the tables and the plots
    (`images`: alt text and the PNG's path; linked from docs/img/)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sizes = (
        "default sizes"
        if default_sizes(command)
        else "**not the default sizes** (see the command): a check of the method, not figures "
        "to quote"
    )
    lines = [
        f"Measured {when} on {machine()}; load average {load_at_start} at the start, "
        f"{load_average()} at the end; {sizes}. Command:",
        "",
        "```",
        command,
        "```",
        "",
        tables.strip(),
    ]
    for alt, path in images:
        lines += ["", f"![{alt}](img/{path.name})"]
    return "\n".join(lines)


def publish(
    name: str, body: str, images: Sequence[Path] = (), doc: Path = DOC, image_dir: Path = IMAGES
) -> None:
    """Copy `images` into `image_dir` and put `body` in section `name` of `doc`; exits with a
    one-line error, changing nothing, when `doc` has no such section."""
    try:
        updated = replace_section(doc.read_text("utf-8"), name, body)
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"cannot publish to {_shown(doc)}: {exc} (the results are in {_shown(RESULTS)})"
        ) from None
    image_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copyfile(image, image_dir / image.name)
    doc.write_text(updated, "utf-8")
    print(
        f"published: section {name} of {_shown(doc)}"
        + "".join(f", {_shown(image_dir / image.name)}" for image in images)
    )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)

"""`job`: the operator's command line for jobs and the queue.

    job submit ACTION [--target HREF] [--payload JSON] [--priority N] [--mode push|pull|mixed]
               [--delay 30s | --at TIME]
    job submit --from FILE.jsonl        one job body (JSON object) per line; '-' reads stdin
    job submit ... --wait [--timeout S] and wait until the job(s) are final
    job list [--filter F] [--state S] [--action A] [--last N] [--orderby O] [--failed]
    job show JOB | job cancel JOB | job watch JOB
    job retry JOB...                    queue FAILED jobs again, one more attempt each
    job queue                           depth by priority, taken entries and their takers
    job restore [--dry-run]             queue again QUEUED jobs that lost their entry
    job zk-secure                       give the engine's existing nodes the --zk-auth ACL

Every command prints for humans by default and JSON with `--json`. Exit status: 0 when it
worked; `watch` and `submit --wait` exit with the job's outcome (0 SUCCESS, 1 FAILED,
2 CANCELED) and `submit --from` with 1 when some lines failed (or, with --wait, some jobs
did not succeed); any error is one line on stderr and exit 3.

Connection and credentials are the engine's common options (environment variables
included); without any credentials, the admin credentials file the job API writes in its
default data directory is used, with the endpoint written in it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..jobsearch import any_of, quote
from ..states import FINAL_STATES, JOB_FAILED, STATES
from ..timeutil import format_time
from .options import CommonConfig, common_options, expand_multi_values, make_api

if TYPE_CHECKING:
    from kazoo.client import KazooClient
    from nuvla.api import Api

    from ..client import Client, JobHandle

EXIT_OK = 0
EXIT_FAILED = 1  # watch, submit --wait: the job FAILED; submit --from: some lines failed
EXIT_CANCELED = 2  # watch: the job was CANCELED
EXIT_ERROR = 3  # anything went wrong: one line on stderr
EXIT_INTERRUPTED = 130
OUTCOME_CODES = {"SUCCESS": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELED": EXIT_CANCELED}
SHOWN_ROWS = 50


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped into a file or grep: job ids must not be cut at rich's default 80 columns.
        console.width = 160
    return console


out = _console()
err = _console(stderr=True)


class CliError(click.ClickException):
    """An error reported as one line on stderr."""

    exit_code = EXIT_ERROR


# -- connections --------------------------------------------------------------------------------


def _has_credentials(common: CommonConfig) -> bool:
    return any(
        (
            common.api_key,
            common.api_secret,
            common.api_user,
            common.api_pass,
            common.api_authn_header,
            common.api_credentials_file,
            os.environ.get("JOB_COOKIES"),
        )
    )


def _default_credentials_file() -> Path:
    from ..api.server import default_data_dir

    return default_data_dir() / "admin-credentials.json"


class Session:
    """What the commands share: the options, and the connections they open lazily."""

    def __init__(self, common: CommonConfig, api_url_given: bool) -> None:
        self.common = common
        self.api_url_given = api_url_given
        self._api = None
        self._client: Client | None = None
        self._zk: KazooClient | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = make_api(self._with_default_credentials())
        return self._api

    def _with_default_credentials(self) -> CommonConfig:
        common = self.common
        if _has_credentials(common):
            return common
        path = _default_credentials_file()
        if not path.is_file():
            return common  # anonymous: the API will say what is not allowed
        changes: dict[str, Any] = {"api_credentials_file": str(path)}
        if not self.api_url_given:
            try:
                endpoint = json.loads(path.read_text()).get("endpoint")
            except (OSError, ValueError, AttributeError):
                endpoint = None
            if isinstance(endpoint, str) and endpoint:
                changes["api_url"] = endpoint
        return dataclasses.replace(common, **changes)

    @property
    def client(self) -> Client:
        """The Python client on the same connection (for waiting)."""
        if self._client is None:
            from ..client import Client

            self._client = Client(api=self.api)
        return self._client

    @property
    def zk(self) -> KazooClient:
        if self._zk is None:
            client = self.common.zookeeper.make_client(use_gevent=False)
            try:
                client.start(timeout=self.common.zk_timeout)
            except Exception as exc:
                client.close()
                raise CliError(
                    f"cannot connect to ZooKeeper at "
                    f"{','.join(self.common.zk_hosts)}: {type(exc).__name__}"
                ) from None
            self._zk = client
        return self._zk

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._zk is not None:
            self._zk.stop()
            self._zk.close()


def job_id(text: str) -> str:
    """`job/<uuid>` from either that or the bare uuid."""
    text = text.strip()
    return text if text.startswith("job/") else f"job/{text}"


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _without_operations(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "operations"}


def _first_line(text: Any, width: int = 60) -> str:
    line = str(text or "").strip().split("\n", 1)[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(headers: list[str], rows: list[list[str]]) -> Table:
    """A plain table whose columns keep their full width; only the last one may be cut."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for index, header in enumerate(headers):
        width = max([len(header), *(len(row[index]) for row in rows)])
        table.add_column(
            header,
            no_wrap=True,
            overflow="ellipsis",
            min_width=None if index == len(headers) - 1 else width,
        )
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text for humans."
)
pass_session = click.make_pass_decorator(Session)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.pass_context
def cli(ctx: click.Context, common: CommonConfig) -> None:
    """Operate the job engine: submit, inspect, cancel and watch jobs; inspect and restore
    the ZooKeeper queue."""
    if common.log_level.upper() == "DEBUG":
        from ..monitoring import setup_logging

        setup_logging("DEBUG", common.log_format)
    given = ctx.get_parameter_source("api_url") not in (None, ParameterSource.DEFAULT)
    session = Session(common, api_url_given=given)
    ctx.obj = session
    ctx.call_on_close(session.close)


# The common options that mean nothing to this command stay accepted (one environment for every
# command of the engine) but out of its help.
for _param in cli.params:
    if isinstance(_param, click.Option) and _param.name in (
        "name",
        "sentry_dsn",
        "statsd",
        "nuvlaedge_fs",
    ):
        _param.hidden = True


# -- submit -------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A length of time: ``90``, ``30s``, ``5m``, ``1h30m``, ``2d`` (seconds without a unit)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            self.fail(f"'{value}' is not a duration such as 90, 30s, 5m, 1h30m or 2d", param, ctx)
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


class Moment(click.ParamType):
    """An ISO-8601 time (``2026-12-24T18:00``, ``...Z``, ``...+01:00``); without an offset,
    the local time of this machine."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"'{value}' is not an ISO-8601 time such as 2026-12-24T18:00Z", param, ctx)
        return moment if moment.tzinfo is not None else moment.astimezone()


def _not_before(delay: float | None, at: datetime | None) -> str | None:
    """The `not-before` of --delay or --at (None: run as soon as possible)."""
    if delay is not None and at is not None:
        raise click.UsageError("give --delay or --at, not both")
    if delay is not None:
        return format_time(datetime.now(UTC) + timedelta(seconds=delay))
    if at is not None:
        return format_time(at)
    return None


def _payload_text(value: Any, where: str) -> str:
    """The job's `payload` attribute (a JSON text) from an option's text or a line's value."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise CliError(f"{where} is not valid JSON: {exc}") from None
        return value
    return json.dumps(value)


def _read_lines(source: IO[str]) -> list[tuple[int, str]]:
    return [(number, line) for number, line in enumerate(source, 1) if line.strip()]


def _body_of_line(line: str, defaults: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise ValueError("not a JSON object with an 'action'")
    if "payload" in body:
        try:
            body["payload"] = _payload_text(body["payload"], "payload")
        except CliError as exc:
            raise ValueError(exc.message) from None
    return {**defaults, **body}


def _api_error(exc: Exception) -> str:
    from nuvla.api import NuvlaError

    if isinstance(exc, NuvlaError):
        status = exc.response.status_code if exc.response is not None else "?"
        return f"job API answered {status}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _submit_many(
    session: Session,
    source: IO[str],
    defaults: dict[str, Any],
    as_json: bool,
    wait: bool = False,
    timeout: float | None = None,
) -> int:
    import requests
    from nuvla.api import NuvlaError

    lines = _read_lines(source)
    api = session.api
    created: list[str] = []
    failed: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
    )
    with progress:
        task = progress.add_task("submit", total=len(lines))
        for number, line in lines:
            try:
                body = _body_of_line(line, defaults)
                created.append(api.add("job", body).data["resource-id"])
            except (ValueError, NuvlaError) as exc:
                reason = str(exc) if isinstance(exc, ValueError) else _api_error(exc)
                failed.append({"line": number, "error": reason})
            except requests.RequestException as exc:
                raise CliError(
                    f"cannot reach the job API ({type(exc).__name__}) after "
                    f"creating {len(created)} job(s)"
                ) from None
            progress.advance(task)
    outcomes = _wait_all(session, created, timeout) if wait else None
    if as_json:
        report: dict[str, Any] = {"created": created, "failed": failed}
        if outcomes is not None:
            report["states"] = outcomes
        _print_json(report)
    else:
        out.print(f"created {len(created)} job(s), failed {len(failed)}")
        for failure in failed:
            out.print(f"  line {failure['line']}: {escape(failure['error'])}")
        if outcomes is not None:
            counts = Counter(outcomes.values())
            out.print("finished: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if failed or (outcomes and any(s != "SUCCESS" for s in outcomes.values())):
        return EXIT_FAILED
    return EXIT_OK


def _wait_all(session: Session, ids: list[str], timeout: float | None) -> dict[str, str]:
    """Each job's final state, waited for together (one long poll for all of them)."""
    import threading

    from ..client import ClientError

    states: dict[str, str] = {}
    errors: list[str] = []
    deadline = None if timeout is None else time.monotonic() + timeout

    def wait(job: str) -> None:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            states[job] = session.client.job(job).wait(left).state
        except ClientError as exc:
            errors.append(exc.message)

    threads = [threading.Thread(target=wait, args=(job,), daemon=True) for job in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise CliError(f"{len(errors)} job(s) not final: {errors[0]}")
    return {job: states[job] for job in ids}


@cli.command()
@click.argument("action", required=False)
@click.option("--target", help="The target resource's href (e.g. deployment/123).")
@click.option("--payload", help="The payload, a JSON text.")
@click.option("--priority", type=click.IntRange(0, 999), help="0 runs first [API: 999].")
@click.option(
    "--mode", type=click.Choice(["push", "pull", "mixed"]), help="Execution mode [API: push]."
)
@click.option(
    "--delay",
    type=Duration(),
    help="Run it no sooner than this from now: 30s, 5m, 1h30m (this project's job API).",
)
@click.option("--at", type=Moment(), help="Run it no sooner than this ISO-8601 time.")
@click.option(
    "--from",
    "source",
    type=click.File("r"),
    help="Submit every job body of a JSON-lines file ('-' for stdin); --priority, "
    "--mode, --delay and --at apply to lines that do not set them.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until the job is final (every job, with --from) and exit with its outcome: "
    "0 SUCCESS, 1 FAILED, 2 CANCELED.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    help="With --wait: give up (exit 3) after so many seconds.",
)
@json_option
@pass_session
def submit(
    session: Session,
    action: str | None,
    target: str | None,
    payload: str | None,
    priority: int | None,
    mode: str | None,
    delay: float | None,
    at: datetime | None,
    source: IO[str] | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> int:
    """Submit a job for ACTION, or many with --from."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    defaults: dict[str, Any] = {}
    if priority is not None:
        defaults["priority"] = priority
    if mode is not None:
        defaults["execution-mode"] = mode
    not_before = _not_before(delay, at)
    if not_before is not None:
        defaults["not-before"] = not_before
    if source is not None:
        if action or target or payload:
            raise click.UsageError("--from takes no ACTION, --target or --payload")
        return _submit_many(session, source, defaults, as_json, wait, timeout)
    if not action:
        raise click.UsageError("give an ACTION, or --from FILE")
    body: dict[str, Any] = {"action": action, **defaults}
    if target:
        body["target-resource"] = {"href": target}
    if payload is not None:
        body["payload"] = _payload_text(payload, "--payload")
    new_id = session.api.add("job", body).data["resource-id"]
    if wait:
        if not as_json:
            out.print(f"{new_id} created ({action}); waiting")
        return _follow(new_id, _versions(session.client.job(new_id), timeout), as_json)
    if as_json:
        _print_json({"id": new_id, **({"not-before": not_before} if not_before else {})})
    else:
        when = f", runs at {not_before} or later" if not_before else ""
        out.print(f"{new_id} created ({action}{when})")
    return EXIT_OK


# -- list, show, cancel -------------------------------------------------------------------------


@cli.command("list")
@click.option("--filter", "filters", multiple=True, help="A CIMI filter (repeatable: and).")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES, case_sensitive=False),
    help="Repeatable: any of.",
)
@click.option("--action", help="Only jobs of this action.")
@click.option(
    "--last", default=20, show_default=True, type=click.IntRange(0), help="How many jobs to show."
)
@click.option("--orderby", default="created:desc", show_default=True)
@click.option(
    "--failed",
    is_flag=True,
    help="Only FAILED jobs (the dead letters), with their attempts and error.",
)
@json_option
@pass_session
def list_jobs(
    session: Session,
    filters: tuple[str, ...],
    states: tuple[str, ...],
    action: str | None,
    last: int,
    orderby: str,
    failed: bool,
    as_json: bool,
) -> int:
    """List jobs, newest first."""
    if failed:
        if states and {s.upper() for s in states} != {JOB_FAILED}:
            raise click.UsageError("--failed lists FAILED jobs: it takes no other --state")
        states = (JOB_FAILED,)
    parts = [f"({f})" for f in filters]
    if states:
        parts.append(f"state={any_of(sorted({s.upper() for s in states}))}")
    if action:
        try:
            parts.append(f"action={quote(action)}")
        except ValueError as exc:
            raise CliError(str(exc)) from None
    params: dict[str, Any] = {"last": last, "orderby": orderby}
    if parts:
        params["filter"] = " and ".join(parts)
    answer = session.api.search("job", **params).data
    jobs = [_without_operations(doc) for doc in answer.get("resources", [])]
    if as_json:
        _print_json({"count": answer.get("count", 0), "jobs": jobs})
        return EXIT_OK
    out.print(f"{len(jobs)} of {answer.get('count', 0)} job(s)")
    if failed:
        out.print(_failed_table(jobs))
        return EXIT_OK
    rows = [
        [
            doc["id"],
            str(doc.get("action", "")),
            str(doc.get("state", "")),
            str(doc.get("progress", "")),
            str(doc.get("priority", "")),
            str(doc.get("created", ""))[:19],
            _first_line(doc.get("status-message")),
        ]
        for doc in jobs
    ]
    table = _table(["ID", "ACTION", "STATE", "%", "PRIO", "CREATED", "MESSAGE"], rows)
    out.print(table)
    return EXIT_OK


def _failed_table(jobs: list[dict]) -> Table:
    rows = [
        [
            doc["id"],
            str(doc.get("action", "")),
            str(doc.get("attempts", "")),
            str(doc.get("updated", ""))[:19],
            _first_line(doc.get("status-message"), 100),
        ]
        for doc in jobs
    ]
    return _table(["ID", "ACTION", "ATTEMPTS", "FAILED AT", "ERROR"], rows)


@cli.command()
@click.argument("job")
@json_option
@pass_session
def show(session: Session, job: str, as_json: bool) -> int:
    """Show every attribute of JOB (job/<uuid> or the uuid)."""
    doc = _without_operations(session.api.get(job_id(job)).data)
    if as_json:
        _print_json(doc)
        return EXIT_OK
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key in sorted(doc):
        value = doc[key]
        if key == "payload" and isinstance(value, str):
            try:
                value = json.dumps(json.loads(value), indent=2)
            except ValueError:
                pass
        elif not isinstance(value, str):
            value = json.dumps(value)
        table.add_row(key, escape(value))
    out.print(table)
    return EXIT_OK


@cli.command()
@click.argument("job")
@json_option
@pass_session
def cancel(session: Session, job: str, as_json: bool) -> int:
    """Cancel JOB (QUEUED or RUNNING); a bulk job's children are cancelled too."""
    from nuvla.api.models import CimiResource

    answer = session.api.operation(CimiResource({"id": job_id(job)}), "cancel").data
    if as_json:
        _print_json(answer)
    else:
        out.print(escape(str(answer.get("message", f"{job_id(job)} canceled"))))
    return EXIT_OK


@cli.command("retry")
@click.argument("jobs", nargs=-1, required=True)
@json_option
@pass_session
def retry_command(session: Session, jobs: tuple[str, ...], as_json: bool) -> int:
    """Queue FAILED JOBS again, each as one more attempt (its attempts and errors are kept);
    the scheduler runs them at its next tick. Exit 1 when some could not be."""
    from nuvla.api import NuvlaError
    from nuvla.api.models import CimiResource

    results = []
    for text in jobs:
        target = job_id(text)
        try:
            answer = session.api.operation(CimiResource({"id": target}), "retry").data
            results.append({"id": target, "ok": True, "message": answer.get("message", "")})
        except NuvlaError as exc:
            results.append({"id": target, "ok": False, "message": _api_error(exc)})
    if as_json:
        _print_json({"jobs": results})
    else:
        for result in results:
            mark = "" if result["ok"] else "not retried: "
            out.print(escape(f"{result['id']}: {mark}{result['message']}"))
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_FAILED


# -- watch --------------------------------------------------------------------------------------


def _poll(session: Session, target: str, interval: float, timeout: float | None) -> Iterator[dict]:
    """The job's document every `interval` seconds, until it is final."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        doc = session.api.get(target).data
        yield doc
        if doc.get("state") in FINAL_STATES:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise CliError(f"{target} still {doc.get('state')} after {timeout:g} s")
        time.sleep(interval)


@cli.command()
@click.argument("job")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between two looks at the job.",
)
@click.option("--timeout", type=click.FloatRange(0), help="Give up (exit 3) after so long.")
@json_option
@pass_session
def watch(session: Session, job: str, interval: float, timeout: float | None, as_json: bool) -> int:
    """Follow JOB until it is final; exit 0 SUCCESS, 1 FAILED, 2 CANCELED."""
    target = job_id(job)
    return _follow(target, _poll(session, target, interval, timeout), as_json)


def _follow(target: str, docs: Iterator[dict], as_json: bool) -> int:
    """Show the job's documents as they come (a live bar, or the last one as JSON); the
    exit status of its outcome."""
    doc: dict = {}
    if as_json:
        doc = deque(docs, maxlen=1)[0]
        _print_json(_without_operations(doc))
    else:
        progress = Progress(
            TextColumn("{task.fields[state]:<8}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[message]}"),
            console=out,
        )
        with progress:
            task = progress.add_task(target, total=100, state="", message="")
            for doc in docs:
                progress.update(
                    task,
                    completed=doc.get("progress", 0),
                    state=doc["state"],
                    message=escape(_first_line(doc.get("status-message"), 50)),
                )
        line = f"{target} {doc['state']}"
        if "return-code" in doc:
            line += f" (return code {doc['return-code']})"
        if doc.get("status-message"):
            line += f": {_first_line(doc['status-message'], 200)}"
        out.print(escape(line))
    return OUTCOME_CODES.get(doc.get("state", ""), EXIT_ERROR)


def _versions(handle: JobHandle, timeout: float | None) -> Iterator[dict]:
    """The job's document at each change until it is final (the client's long poll)."""
    from ..client import WaitTimeout

    try:
        for _ in handle.progress(timeout):
            assert handle.doc is not None
            yield handle.doc
    except WaitTimeout as exc:
        raise CliError(exc.message) from None


# -- queue --------------------------------------------------------------------------------------


def queue_status(zk: KazooClient) -> dict[str, Any]:
    """Depth by priority, the taken entries with their takers, and the oldest entry."""
    # Imported here: only the queue commands need kazoo.
    from .. import queue
    from ..queue import parse_entry_name
    from ..zk import children, read_nodes

    def arrival(name: str) -> int:
        """An entry's place in arrival order (names outside the entry grammar come last)."""
        parsed = parse_entry_name(name)
        return parsed.arrival if parsed is not None else sys.maxsize

    names = children(zk, queue.ENTRIES)
    taken = children(zk, queue.TAKEN)
    parsed = (parse_entry_name(name) for name in names)
    by_priority = Counter(f"{entry.priority:03d}" for entry in parsed if entry is not None)
    takers = dict(read_nodes(zk, (queue.taken_path(name) for name in taken)))
    oldest = min(names, key=arrival, default=None)
    wanted = [*taken, *([oldest] if oldest else [])]
    jobs = dict(read_nodes(zk, (queue.entry_path(name) for name in wanted)))

    def text(data: bytes | None) -> str | None:
        return None if data is None else data.decode("utf-8", "replace")

    held = [
        {
            "entry": name,
            "taker": text(takers.get(queue.taken_path(name))),
            "job": text(jobs.get(queue.entry_path(name))),
        }
        for name in sorted(taken)
    ]
    status: dict[str, Any] = {
        "entries": len(names),
        "by_priority": dict(sorted(by_priority.items())),
        "taken": held,
        "oldest": None,
    }
    if oldest is not None:
        stat = zk.exists(queue.entry_path(oldest))
        if stat is not None:
            status["oldest"] = {
                "entry": oldest,
                "job": text(jobs.get(queue.entry_path(oldest))),
                "age_seconds": round(max(0.0, time.time() - stat.ctime / 1000), 3),
            }
    return status


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s",
    ]
    return " ".join(p for p in parts if p)


@cli.command("queue")
@json_option
@pass_session
def queue_command(session: Session, as_json: bool) -> int:
    """Show the ZooKeeper queue: depth by priority, taken entries, the oldest entry."""
    status = queue_status(session.zk)
    if as_json:
        _print_json(status)
        return EXIT_OK
    out.print(
        f"{status['entries']} entr{'y' if status['entries'] == 1 else 'ies'} queued, "
        f"{len(status['taken'])} taken"
    )
    if status["by_priority"]:
        out.print("\ndepth by priority")
        out.print(
            _table(["PRIORITY", "ENTRIES"], [[p, str(n)] for p, n in status["by_priority"].items()])
        )
    if status["taken"]:
        by_taker = Counter(str(item["taker"]) for item in status["taken"])
        out.print("taken entries by taker")
        out.print(_table(["TAKER", "TAKEN"], [[t, str(n)] for t, n in by_taker.most_common()]))
        out.print("taken entries")
        out.print(
            _table(
                ["ENTRY", "JOB", "TAKER"],
                [
                    [item["entry"], str(item["job"]), str(item["taker"])]
                    for item in status["taken"][:SHOWN_ROWS]
                ],
            )
        )
        if len(status["taken"]) > SHOWN_ROWS:
            out.print(f"... and {len(status['taken']) - SHOWN_ROWS} more (--json lists all)")
    oldest = status["oldest"]
    if oldest:
        out.print(
            f"oldest entry: {oldest['entry']} ({oldest['job']}), queued "
            f"{_duration(oldest['age_seconds'])} ago"
        )
    return EXIT_OK


# -- restore ------------------------------------------------------------------------------------


@cli.command("restore")
@click.option("--dry-run", is_flag=True, help="Only show what would be queued.")
@click.option(
    "--min-age",
    default=60,
    show_default=True,
    type=click.FloatRange(0),
    help="Leave jobs younger than this (seconds): their add may be in flight.",
)
@click.option(
    "--page-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Jobs read from the job API per request.",
)
@json_option
@pass_session
def restore_command(
    session: Session, dry_run: bool, min_age: float, page_size: int, as_json: bool
) -> int:
    """Queue again the QUEUED push/mixed jobs that have no entry in the queue."""
    from ..restore import RestoreBusy, restore

    try:
        report = restore(
            session.api, session.zk, dry_run=dry_run, min_age=min_age, page_size=page_size
        )
    except RestoreBusy as exc:
        raise CliError(str(exc)) from None
    if as_json:
        _print_json(
            {
                "dry_run": report.dry_run,
                "entries": report.entries,
                "scanned": report.scanned,
                "waiting": report.waiting,
                "queued": report.queued,
                "missing": [{"id": i, "priority": p} for i, p in report.missing],
            }
        )
        return EXIT_OK
    out.print(report.summary())
    if report.missing:
        out.print("would be queued:" if dry_run else "queued:")
        out.print(
            _table(
                ["JOB", "PRIORITY"],
                [[job, str(priority)] for job, priority in report.missing[:SHOWN_ROWS]],
            )
        )
        if len(report.missing) > SHOWN_ROWS:
            out.print(f"... and {len(report.missing) - SHOWN_ROWS} more (--json lists all)")
    return EXIT_OK


# -- zk-secure ----------------------------------------------------------------------------------


@cli.command("zk-secure")
@json_option
@pass_session
def zk_secure_command(session: Session, as_json: bool) -> int:
    """Give every existing node of the engine's trees (/job, /election, /locks, /executors),
    queue entries included, the ACL of --zk-auth: for nodes created before auth was on."""
    from ..zk_security import ENGINE_ROOTS, ZkAccessDenied, secure_tree

    if not session.common.zk_security.auth:
        raise CliError("zk-secure needs --zk-auth, ZK_AUTH or --zk-auth-file")
    try:
        changed = secure_tree(session.zk, session.common.zk_security, depth=None)
    except ZkAccessDenied as exc:
        raise CliError(str(exc)) from None
    if as_json:
        _print_json({"roots": list(ENGINE_ROOTS), "changed": changed})
    else:
        out.print(f"ACL set on {len(changed)} node(s) under {', '.join(ENGINE_ROOTS)}")
    return EXIT_OK


# -- entry point --------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run(argv: list[str]) -> int:
    """Run the CLI on `argv`; every error becomes one line on stderr and EXIT_ERROR."""
    import requests
    from kazoo.exceptions import KazooException, NoAuthError
    from kazoo.handlers.threading import KazooTimeoutError
    from nuvla.api import NuvlaError

    from ..client import ClientError

    # No library may print a traceback or a warning of its own on our stderr.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        result = cli.main(
            args=expand_multi_values(argv, ("--zk-hosts",), cli.commands),
            prog_name="job",
            standalone_mode=False,
        )
        return result if isinstance(result, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        err.print("error: interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        message = exc.format_message()
    except NuvlaError as exc:
        message = _api_error(exc)
    except ClientError as exc:
        message = exc.message
    except requests.RequestException as exc:
        message = f"cannot reach the job API: {type(exc).__name__}"
    except NoAuthError:
        message = (
            "ZooKeeper: NoAuthError: the engine's nodes are protected by other "
            "credentials (check --zk-auth)"
        )
    except (KazooException, KazooTimeoutError) as exc:
        message = f"ZooKeeper: {type(exc).__name__} {exc}".strip()
    except OSError as exc:
        message = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # never a traceback: one line, and a way to learn more
        message = f"unexpected {type(exc).__name__}: {exc} (run with -d for details)"
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
    click.echo(f"error: {_one_line(message)}", err=True)
    return EXIT_ERROR


def main() -> None:
    """Console-script entry point (`job`)."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()

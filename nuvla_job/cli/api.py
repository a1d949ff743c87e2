"""`job-api`: run the job API server, and manage its users and API keys."""

from __future__ import annotations

from gevent import monkey

# Before anything imports sockets, so that every blocking call yields to other greenlets.
monkey.patch_all()

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import click  # noqa: E402

from ..monitoring import setup_logging  # noqa: E402
from .options import log_format_option  # noqa: E402
from .zk_options import zk_security_options  # noqa: E402

if TYPE_CHECKING:
    from ..api.identity import Identities
    from ..api.server import ServerConfig

LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


def _server_config(**options: Any) -> ServerConfig:
    from ..api.server import ServerConfig

    return ServerConfig(**options)


def _check_proxies(values: tuple[str, ...]) -> tuple[str, ...]:
    from ..api.proxies import TrustedProxies

    try:
        TrustedProxies(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None
    return values


def _check_db(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A --db naming no store this server can open is a usage error (None: the default)."""
    from ..api.store import StoreUrlError, parse_store_url

    if value is not None:
        try:
            parse_store_url(value)
        except StoreUrlError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _check_public_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    from ..api.server import check_public_url

    if not value:
        return ""
    try:
        return check_public_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


db_option = click.option(
    "--db",
    default=None,
    envvar="JOB_API_DB",
    callback=_check_db,
    help="The job database: a SQLite file path or sqlite:///absolute/path "
    "[default: ~/.local/share/nuvla-job/jobs.sqlite].",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The nuvla-job job API: a CIMI `job` resource server on SQLite and ZooKeeper."""


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="JOB_API_HOST",
    help="Address to listen on.",
)
@click.option(
    "--port",
    default=8200,
    show_default=True,
    type=click.IntRange(1, 65535),
    envvar="JOB_API_PORT",
    help="Port to listen on.",
)
@db_option
@click.option(
    "--zk-hosts",
    default="127.0.0.1:2181",
    show_default=True,
    envvar="ZK_HOSTS",
    help="ZooKeeper hosts, comma-separated.",
)
@zk_security_options
@click.option(
    "--admin-credentials",
    default="",
    envvar="JOB_API_ADMIN_CREDENTIALS",
    help="Where the first admin API key is written (mode 0600) "
    "[default: admin-credentials.json beside the database].",
)
@click.option(
    "--trust-authn-header",
    is_flag=True,
    envvar="JOB_API_TRUST_AUTHN_HEADER",
    help="Honour the nuvla-authn-info header. Only behind a trusted proxy: "
    "anyone who can reach the port can then claim any identity.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    envvar="JOB_API_TRUSTED_PROXIES",
    callback=lambda ctx, param, value: _check_proxies(value),
    metavar="ADDRESS|NETWORK|HOST",
    help="A load balancer or proxy whose X-Forwarded-For names the client, for the login "
    "back-off (repeatable; environment: space-separated) [default: none, the header is "
    "ignored].",
)
@click.option(
    "--max-body",
    default=4 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1024),
    envvar="JOB_API_MAX_BODY",
    help="Largest request body accepted, in bytes.",
)
@click.option(
    "--tls-cert",
    default=None,
    envvar="JOB_API_TLS_CERT",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this cert.",
)
@click.option(
    "--tls-key",
    default=None,
    envvar="JOB_API_TLS_KEY",
    type=click.Path(exists=True, dir_okay=False),
    help="Private key of --tls-cert.",
)
@click.option(
    "--login-max-failures",
    default=5,
    show_default=True,
    type=click.IntRange(0),
    envvar="JOB_API_LOGIN_MAX_FAILURES",
    help="Failed logins per user name or key from one client address before that "
    "address backs off for that name (0: no limit).",
)
@click.option(
    "--login-max-failures-per-address",
    default=50,
    show_default=True,
    type=click.IntRange(0),
    envvar="JOB_API_LOGIN_MAX_FAILURES_PER_ADDRESS",
    help="Failed logins per client address before back-off (0: no limit; use 0 "
    "behind a reverse proxy).",
)
@click.option(
    "--login-max-failures-per-name",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    envvar="JOB_API_LOGIN_MAX_FAILURES_PER_NAME",
    help="Failed logins per user name or key from all addresses together before the name "
    "backs off everywhere (0: off; on, any client can lock a name out).",
)
@click.option(
    "--login-backoff",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    envvar="JOB_API_LOGIN_BACKOFF",
    help="Seconds logins are refused (429) once a limit is reached; doubles with "
    "each further failure.",
)
@click.option(
    "--login-window",
    default=900.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    envvar="JOB_API_LOGIN_WINDOW",
    help="Failures are forgotten this many seconds after the last one; also the longest back-off.",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    envvar="JOB_API_METRICS",
    help="Serve Prometheus metrics at /metrics on the API's port (no login "
    "needed: they hold counts and route templates, no ids or names).",
)
@click.option(
    "--dashboard-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.5, 600),
    envvar="JOB_API_DASHBOARD_INTERVAL",
    help="Seconds between two samples of the dashboard's fleet charts (three hours of "
    "them are kept in memory).",
)
@click.option(
    "--recovery-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    envvar="JOB_API_RECOVERY_INTERVAL",
    help="On a PostgreSQL store (replicas): seconds between two looks for adds that a "
    "job API process which died had not finished.",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    envvar="JOB_API_MAX_CONNECTIONS",
    help="Client connections served at once; one more is answered 503 and closed.",
)
@click.option(
    "--idle-timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    envvar="JOB_API_IDLE_TIMEOUT",
    help="Seconds a connection may wait for its next request before it is closed.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    envvar="JOB_API_HEADER_TIMEOUT",
    help="Seconds a request's line and headers may take to arrive (408 past them); also "
    "the longest pause while reading a body or writing an answer.",
)
@click.option(
    "--db-threads",
    default=4,
    show_default=True,
    type=click.IntRange(2, 64),
    envvar="JOB_API_DB_THREADS",
    help="Threads running database calls off the event loop (each holds one reader "
    "connection); searches use all but one of them, so that gets, edits and logins "
    "always find one.",
)
@click.option(
    "--query-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    envvar="JOB_API_QUERY_TIMEOUT",
    help="Seconds one search, aggregation or bulk delete may run in the database; "
    "past them it is stopped and answered 503.",
)
@click.option(
    "--public-url",
    default=None,
    envvar="JOB_API_PUBLIC_URL",
    callback=_check_public_url,
    help="Where clients reach this API (https://jobs.example.org, with a path prefix "
    "behind a proxy): the base-uri of the cloud entry point [default: the listening "
    "address].",
)
@click.option(
    "-l", "--log-level", default="INFO", type=LOG_LEVELS, envvar="JOB_LOG_LEVEL", show_default=True
)
@log_format_option()
def serve(log_level: str, log_format: str, **options: Any) -> None:
    """Run the job API server until SIGTERM or SIGINT."""
    if bool(options["tls_cert"]) != bool(options["tls_key"]):
        raise click.UsageError("--tls-cert and --tls-key go together")
    setup_logging(log_level, log_format)
    from ..api.server import JobApiServer, TlsConfigError
    from ..api.store import StoreError

    try:
        server = JobApiServer(_server_config(**options))
    except (StoreError, TlsConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        server.serve_forever()
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {options['host']}:{options['port']}: {exc.strerror or exc}"
        ) from None


def _identities(db: str | None) -> Identities:
    from ..api.identity import Identities
    from ..api.store import StoreError, open_store

    try:
        return Identities(open_store(_server_config(db=db).store_url).identities)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("add-user")
@click.argument("username")
@click.option(
    "--password",
    envvar="JOB_API_NEW_PASSWORD",
    help="Read from --password-file or a prompt when not given (prefer those, or "
    "the environment: the command line is visible to other users).",
)
@click.option(
    "--password-file",
    envvar="JOB_API_NEW_PASSWORD_FILE",
    type=click.Path(dir_okay=False),
    help="Read the password from this file.",
)
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--group", "groups", multiple=True, help="Extra group claims (repeatable).")
@db_option
def add_user(
    username: str,
    password: str | None,
    password_file: str | None,
    admin: bool,
    groups: tuple[str, ...],
    db: str | None,
) -> None:
    """Create a user who logs in with USERNAME and a password."""
    from ..api.identity import ADMIN_GROUP
    from .options import read_secret_file

    if password is not None and password_file:
        raise click.UsageError("give --password or --password-file, not both")
    if password_file:
        password = read_secret_file(password_file, "--password-file")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("the password is empty")

    extra = [*groups, *([ADMIN_GROUP] if admin else [])]
    try:
        user_id = _identities(db).add_user(username, password, extra)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(user_id)


@main.command("add-key")
@click.option("--identity", required=True, help="The user id the key acts as (user/...).")
@click.option("--admin", is_flag=True, help="Give the key administrator rights.")
@click.option("--group", "groups", multiple=True, help="Extra group claims (repeatable).")
@db_option
def add_key(identity: str, admin: bool, groups: tuple[str, ...], db: str | None) -> None:
    """Create an API key; prints {"key", "secret"} as JSON (the secret is shown only once)."""
    from ..api.identity import ADMIN_GROUP

    extra = [*groups, *([ADMIN_GROUP] if admin else [])]
    key, secret = _identities(db).add_api_key(identity, extra)
    json.dump({"key": key, "secret": secret}, sys.stdout)
    click.echo()


def _store_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _check_db(ctx, param, value)
    return value


def _progress_lines(every: float = 5.0) -> Callable[[int, int], None]:
    last = -math.inf

    def line(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= every or done >= total:
            last = time.monotonic()
            click.echo(f"jobs: {done:,} / {total:,} read")

    return line


@main.command()
@click.argument("source", callback=_store_url)
@click.argument("destination", callback=_store_url)
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Jobs read and written at a time.",
)
def migrate(source: str, destination: str, batch: int) -> None:
    """Copy jobs and identities from SOURCE to DESTINATION (two --db values: a SQLite file
    and a postgresql:// URL, either way round). Stop the source's job API first. Resumable:
    a rerun copies only what DESTINATION lacks. Exits 1 unless both hold as many jobs at the
    end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ..api.migrate import migrate as copy
    from ..api.migrate import same_database
    from ..api.store import StoreError, open_store, parse_store_url

    origin_url = parse_store_url(source)
    if same_database(origin_url, parse_store_url(destination)):
        raise click.UsageError("SOURCE and DESTINATION are the same database")
    if origin_url.scheme == "sqlite" and not origin_url.path.is_file():
        # Opening it would create an empty store: a mistyped path would copy nothing, "fine".
        raise click.BadParameter(f"no SQLite file at {origin_url.path}", param_hint="'SOURCE'")
    try:
        origin = open_store(source)
        try:
            target = open_store(destination)
        except BaseException:
            origin.close()
            raise
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        if sys.stdout.isatty():
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task("jobs", total=None)
                report = copy(
                    origin,
                    target,
                    batch,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
        else:
            # A log or a pipe: a plain line at most every few seconds, and the last one.
            report = copy(origin, target, batch, _progress_lines())
    except StoreError as exc:
        raise click.ClickException(
            f"{exc} (run the command again: it goes on where it stopped)"
        ) from None
    finally:
        origin.close()
        target.close()
    click.echo(
        f"jobs: {report.jobs_copied} copied, {report.jobs_present} already there; "
        f"principals: {report.principals_copied} copied; sessions: {report.sessions_copied} copied"
    )
    click.echo(f"counts: source {report.source_jobs}, destination {report.destination_jobs}")
    if report.unstorable:
        click.echo(
            f"{len(report.unstorable)} job(s) the destination cannot hold (a NUL character): "
            + ", ".join(report.unstorable[:20]),
            err=True,
        )
    if not report.complete:
        if report.destination_jobs > report.source_jobs:
            raise click.ClickException(
                f"the destination holds {report.destination_jobs - report.source_jobs} jobs"
                " more than the source: it held jobs of its own, or a job API added some"
                " during the copy"
            )
        raise click.ClickException(
            "the destination lacks jobs of the source (run the command again when a job API"
            " was serving the source: it copies what is missing)"
            if not report.unstorable
            else "the destination lacks jobs of the source"
        )


if __name__ == "__main__":
    main()

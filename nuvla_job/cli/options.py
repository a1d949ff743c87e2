"""Options shared by the engine's commands, each also read from an environment variable.

Upstream's spellings are accepted too, so a deployment can switch by changing only the
image: several values after one flag (``--zk-hosts h1:2181 h2:2181``), ``-l``/``-d``,
``--statsd`` and ``--nuvlaedge-fs``, and the ``JOB_COOKIES`` variable.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..monitoring import LOG_FORMATS, register_secret
from ..transport import LeanTransport
from ..zk_security import ZkSecurity
from .zk_options import pop_zk_security, zk_security_option_list

if TYPE_CHECKING:
    from kazoo.client import KazooClient
    from nuvla.api import Api

    from ..zk import ZkSettings

log = logging.getLogger(__name__)

LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)
LOG_FORMAT_CHOICE = click.Choice(LOG_FORMATS, case_sensitive=False)
DEFAULT_API_URL = "http://127.0.0.1:8200"


def expand_multi_values(
    argv: Sequence[str], flags: Sequence[str], commands: Collection[str] = ()
) -> list[str]:
    """Turn ``--flag a b`` into ``--flag a --flag b`` for the given flags (upstream's form).

    A word in ``commands`` (a command group's subcommand names) ends the values, so that
    ``job --zk-hosts h submit ...`` keeps ``submit`` as the subcommand.
    """
    result: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg.startswith("-") or arg in commands:
            current = arg if arg in flags else None
            result.append(arg)
        elif current is not None and result[-1] != current:
            result += [current, arg]
        else:
            result.append(arg)
    return result


@dataclass(frozen=True)
class CommonConfig:
    zk_hosts: tuple[str, ...]
    zk_timeout: float
    api_url: str
    api_key: str | None
    api_secret: str | None
    api_user: str | None
    api_pass: str | None
    api_authn_header: str | None
    api_credentials_file: str | None
    api_insecure: bool
    name: str
    log_level: str
    sentry_dsn: str | None
    nuvlaedge_fs: str | None
    log_format: str = "text"
    zk_security: ZkSecurity = ZkSecurity()

    @property
    def zookeeper(self) -> ZkSettings:
        """The ZooKeeper options as one value, handed to whatever makes a client."""
        from ..zk import ZkSettings, hosts_string

        return ZkSettings(hosts_string(self.zk_hosts), self.zk_timeout, self.zk_security)


def log_format_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--log-format text|json`` (JOB_LOG_FORMAT): JSON is one object per line for shippers."""
    return click.option(
        "--log-format",
        type=LOG_FORMAT_CHOICE,
        default="text",
        envvar="JOB_LOG_FORMAT",
        show_default=True,
        help="text for humans, json for log shippers (one object per line).",
    )


def read_secret_file(path: str, option: str) -> str:
    """The secret in ``path`` without its trailing newline; a usage error naming ``option``
    (never the file's content) when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise click.UsageError(f"cannot read {option} {path}: {reason}") from None
    if not value:
        raise click.UsageError(f"{option} {path} is empty")
    register_secret(value)
    return value


def _secret(kwargs: dict[str, Any], name: str) -> str | None:
    """The value of ``--NAME`` or of ``--NAME-file`` (both given: a usage error)."""
    value, path = kwargs.pop(name), kwargs.pop(f"{name}_file")
    flag = f"--{name.replace('_', '-')}"
    if value is not None and path:
        raise click.UsageError(f"give {flag} or {flag}-file, not both")
    return read_secret_file(path, f"{flag}-file") if path else value


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common options; the command receives them as one ``common`` CommonConfig."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--zk-hosts",
            multiple=True,
            envvar="ZK_HOSTS",
            default=("127.0.0.1:2181",),
            show_default=True,
            help="ZooKeeper hosts: a comma list, or several values after the flag.",
        ),
        click.option(
            "--zk-timeout",
            type=click.FloatRange(1, 600),
            default=10.0,
            envvar="ZK_TIMEOUT",
            show_default=True,
            help="ZooKeeper session timeout in seconds: how long a dead process "
            "keeps its jobs and leaderships.",
        ),
        *zk_security_option_list(),
        click.option(
            "--api-url",
            default=DEFAULT_API_URL,
            envvar="JOB_API_URL",
            show_default=True,
            help="Job API endpoint.",
        ),
        click.option("--api-key", envvar="JOB_API_KEY", help="API key id."),
        click.option(
            "--api-secret",
            envvar="JOB_API_SECRET",
            help="API key secret (prefer the environment variable or a file).",
        ),
        click.option(
            "--api-secret-file",
            envvar="JOB_API_SECRET_FILE",
            type=click.Path(dir_okay=False),
            help="Read the API key secret from this file.",
        ),
        click.option("--api-user", envvar="JOB_API_USER", help="Username."),
        click.option(
            "--api-pass",
            envvar="JOB_API_PASS",
            help="Password (prefer the environment variable or a file).",
        ),
        click.option(
            "--api-pass-file",
            envvar="JOB_API_PASS_FILE",
            type=click.Path(dir_okay=False),
            help="Read the password from this file.",
        ),
        click.option(
            "--api-authn-header",
            envvar="JOB_API_AUTHN_HEADER",
            help="Send the nuvla-authn-info header instead of logging in.",
        ),
        click.option(
            "--api-credentials-file",
            envvar="JOB_API_CREDENTIALS",
            type=click.Path(dir_okay=False),
            help='JSON file with "key" and "secret" (the job API writes one).',
        ),
        click.option(
            "--api-insecure",
            is_flag=True,
            envvar="JOB_API_INSECURE",
            help="Do not verify the job API's TLS certificate.",
        ),
        click.option(
            "--name",
            envvar="JOB_NAME",
            default=None,
            help="This process's name in logs, Sentry and ZooKeeper [default: host-pid].",
        ),
        click.option(
            "-l",
            "--log-level",
            type=LOG_LEVELS,
            default="INFO",
            envvar="JOB_LOG_LEVEL",
            show_default=True,
        ),
        click.option("-d", "--debug", is_flag=True, help="Same as --log-level DEBUG."),
        log_format_option(),
        click.option(
            "--sentry-dsn", envvar="SENTRY_DSN", help="Report exceptions to this Sentry DSN."
        ),
        click.option(
            "--sentry-dsn-file",
            envvar="SENTRY_DSN_FILE",
            type=click.Path(dir_okay=False),
            help="Read the Sentry DSN from this file.",
        ),
        click.option(
            "--statsd",
            envvar="JOB_STATSD",
            default=None,
            help="Accepted for compatibility and ignored: use --metrics-port (Prometheus).",
        ),
        click.option(
            "--nuvlaedge-fs",
            envvar="JOB_NUVLAEDGE_FS",
            default=None,
            help="Passed to actions as job.nuvlaedge_fs.",
        ),
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        statsd = kwargs.pop("statsd")
        debug = kwargs.pop("debug")
        common = CommonConfig(
            zk_hosts=tuple(kwargs.pop("zk_hosts")),
            zk_timeout=kwargs.pop("zk_timeout"),
            zk_security=pop_zk_security(kwargs),
            api_url=kwargs.pop("api_url"),
            api_key=kwargs.pop("api_key"),
            api_secret=_secret(kwargs, "api_secret"),
            api_user=kwargs.pop("api_user"),
            api_pass=_secret(kwargs, "api_pass"),
            api_authn_header=kwargs.pop("api_authn_header"),
            api_credentials_file=kwargs.pop("api_credentials_file"),
            api_insecure=kwargs.pop("api_insecure"),
            name=kwargs.pop("name") or f"{socket.gethostname()}-{os.getpid()}",
            log_level="DEBUG" if debug else kwargs.pop("log_level"),
            sentry_dsn=_secret(kwargs, "sentry_dsn"),
            nuvlaedge_fs=kwargs.pop("nuvlaedge_fs"),
            log_format=kwargs.pop("log_format").lower(),
        )
        kwargs.pop("log_level", None)
        for secret in (common.api_secret, common.api_pass, common.api_authn_header):
            register_secret(secret)
        if statsd:
            log.warning(
                "--statsd %s ignored: this engine does not send statsd metrics; "
                "serve Prometheus metrics with --metrics-port instead",
                statsd,
            )
        return command(common=common, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _credentials(common: CommonConfig) -> dict[str, str] | None:
    if common.api_key or common.api_secret:
        if not (common.api_key and common.api_secret):
            raise click.UsageError("--api-key and --api-secret go together")
        return {"key": common.api_key, "secret": common.api_secret}
    if common.api_user or common.api_pass:
        if not (common.api_user and common.api_pass):
            raise click.UsageError("--api-user and --api-pass go together")
        return {"username": common.api_user, "password": common.api_pass}
    if common.api_credentials_file:
        try:
            with open(common.api_credentials_file) as handle:
                data = json.load(handle)
            creds = {"key": str(data["key"]), "secret": str(data["secret"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.UsageError(
                f"cannot read API credentials from "
                f"{common.api_credentials_file}: {type(exc).__name__}"
            ) from None
        register_secret(creds["secret"])
        return creds
    return None


# The longest wait between two logins refused with 429 (the server says how long in
# Retry-After; its back-off is bounded by its --login-window, 900 s by default).
MAX_LOGIN_WAIT = 900


def make_api(common: CommonConfig, pool_size: int = 10, wait_when_throttled: bool = False) -> Api:
    """A logged-in ``nuvla.api.Api`` (or one using JOB_COOKIES or the authn header).

    ``wait_when_throttled``: a login refused with 429 (too many failed logins for this key
    from this address) is tried again after the server's Retry-After, until it is let in,
    instead of ending the command: a long-running engine process waits out a back-off
    that others' failures may have started."""
    import requests.adapters
    import requests.utils
    from nuvla.api import Api

    creds = _credentials(common)
    cookies = os.environ.get("JOB_COOKIES")
    cookie_file = None
    if cookies:
        # Upstream passes a base64 cookie jar instead of credentials.
        handle = tempfile.NamedTemporaryFile("wb", prefix="job-cookies-", delete=False)
        with handle:
            handle.write(base64.b64decode(cookies))
        cookie_file = handle.name
    api = Api(
        endpoint=common.api_url,
        insecure=common.api_insecure,
        persist_cookie=bool(cookie_file),
        cookie_file=cookie_file,
        reauthenticate=True,
        login_creds=dict(creds) if creds else None,
        authn_header=common.api_authn_header,
    )
    # requests reads the proxy and CA-bundle variables from the whole environment on every
    # request (a third of the executor's CPU per job); read them once here instead.
    env = requests.utils.get_environ_proxies(common.api_url)
    api.session.proxies.update(env)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and api.session.verify is True:
        api.session.verify = bundle
    api.session.trust_env = False
    # Enough pooled connections for every greenlet that may call the API at once.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    api.session.mount("http://", adapter)
    api.session.mount("https://", adapter)
    LeanTransport.install(api.session, pool_size)
    if creds and not cookie_file:
        _login(api, common.api_url, wait_when_throttled)
    return api


def _login(api: Api, url: str, wait_when_throttled: bool) -> None:
    while True:
        try:
            response = api.login(api.session.login_params)
        except Exception as exc:
            raise click.ClickException(
                f"cannot reach the job API at {url}: {type(exc).__name__}"
            ) from None
        status = getattr(response, "status_code", "no answer")
        if status == 429 and wait_when_throttled and response is not None:
            wait = _retry_after(response.headers.get("Retry-After"))
            log.warning(
                "login to the job API at %s refused for now (429: too many failed logins "
                "for this key from here); trying again in %d s",
                url,
                wait,
            )
            time.sleep(wait)  # gevent's sleep in the engine processes (monkey-patched)
            continue
        if status != 201:
            raise click.ClickException(f"login to the job API at {url} failed ({status})")
        return


def _retry_after(value: str | None) -> int:
    """Seconds to wait from a Retry-After header (seconds only; 5 when missing or odd)."""
    try:
        seconds = int((value or "").strip())
    except ValueError:
        return 5
    return min(max(seconds, 1), MAX_LOGIN_WAIT)


def connect_zookeeper(common: CommonConfig) -> KazooClient:
    """A started kazoo client (gevent handler), or a one-line error when none answers.

    With auth, the engine's existing parent nodes get its ACL.
    """
    from kazoo.exceptions import KazooException

    from ..zk_security import ZkAccessDenied, secure_tree

    zk = common.zookeeper.make_client()
    try:
        zk.start(timeout=max(15.0, common.zk_timeout))
    # The gevent handler's timeout is gevent.Timeout, a BaseException.
    except (Exception, zk.handler.timeout_exception) as exc:
        zk.stop()
        zk.close()
        timed_out = isinstance(exc, zk.handler.timeout_exception)
        reason = "no answer" if timed_out else type(exc).__name__
        raise click.ClickException(
            f"cannot connect to ZooKeeper at {','.join(common.zk_hosts)}: {reason}"
        ) from None
    try:
        changed = secure_tree(zk, common.zk_security)
    except (ZkAccessDenied, KazooException) as exc:
        zk.stop()
        zk.close()
        raise click.ClickException(str(exc) or type(exc).__name__) from None
    if changed:
        log.warning(
            "ZooKeeper: set the engine's ACL on %d existing node(s): %s",
            len(changed),
            ", ".join(changed[:10]),
        )
    return zk

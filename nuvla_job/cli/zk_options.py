"""The ZooKeeper security options (digest auth, TLS) of every command that connects to it."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import Any

import click

from ..monitoring import register_secret
from ..zk_security import ZkSecurity, parse_auth, read_auth_file

_FILE = click.Path(exists=True, dir_okay=False)
_NAMES = (
    "zk_auth",
    "zk_auth_file",
    "zk_tls",
    "zk_tls_ca",
    "zk_tls_cert",
    "zk_tls_key",
    "zk_tls_no_check_hostname",
)


def zk_security_option_list() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The click options; `pop_zk_security` turns their values into a ZkSecurity."""
    return [
        click.option(
            "--zk-auth",
            envvar="ZK_AUTH",
            metavar="USER:PASSWORD",
            help="ZooKeeper digest identity; nodes the engine creates are then "
            "readable and writable by it only (prefer ZK_AUTH or a file).",
        ),
        click.option(
            "--zk-auth-file",
            envvar="ZK_AUTH_FILE",
            type=_FILE,
            help="File whose first line is the USER:PASSWORD of --zk-auth.",
        ),
        click.option(
            "--zk-tls",
            is_flag=True,
            envvar="ZK_TLS",
            help="Connect to ZooKeeper over TLS (its secureClientPort).",
        ),
        click.option(
            "--zk-tls-ca",
            envvar="ZK_TLS_CA",
            type=_FILE,
            help="CA certificates (PEM) the ZooKeeper server's certificate must "
            "chain to [default: the system's]. Implies --zk-tls.",
        ),
        click.option(
            "--zk-tls-cert",
            envvar="ZK_TLS_CERT",
            type=_FILE,
            help="Client certificate (PEM) for servers that ask for one. Implies --zk-tls.",
        ),
        click.option(
            "--zk-tls-key",
            envvar="ZK_TLS_KEY",
            type=_FILE,
            help="Unencrypted private key (PEM) of --zk-tls-cert.",
        ),
        click.option(
            "--zk-tls-no-check-hostname",
            is_flag=True,
            envvar="ZK_TLS_NO_CHECK_HOSTNAME",
            help="Accept a server certificate issued for another name (the chain "
            "is still verified).",
        ),
    ]


def pop_zk_security(kwargs: dict[str, Any]) -> ZkSecurity:
    """Take the options' values out of `kwargs`; a bad value is a one-line usage error."""
    values = {name: kwargs.pop(name, None) for name in _NAMES}
    auth = None
    try:
        if values["zk_auth"] and values["zk_auth_file"]:
            raise ValueError("give --zk-auth or --zk-auth-file, not both")
        if values["zk_auth"]:
            auth = parse_auth(values["zk_auth"])
        elif values["zk_auth_file"]:
            auth = read_auth_file(values["zk_auth_file"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if auth:
        register_secret(auth.partition(":")[2])
    if bool(values["zk_tls_cert"]) != bool(values["zk_tls_key"]):
        raise click.UsageError("--zk-tls-cert and --zk-tls-key go together")
    tls = bool(values["zk_tls"] or values["zk_tls_ca"] or values["zk_tls_cert"])
    if tls:
        _check_tls_files(values["zk_tls_ca"], values["zk_tls_cert"], values["zk_tls_key"])
    return ZkSecurity(
        auth=auth,
        tls=tls,
        tls_ca=values["zk_tls_ca"],
        tls_cert=values["zk_tls_cert"],
        tls_key=values["zk_tls_key"],
        tls_check_hostname=not values["zk_tls_no_check_hostname"],
    )


def _check_tls_files(ca: str | None, cert: str | None, key: str | None) -> None:
    # Here rather than at each connection attempt, where kazoo would only retry and log.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if ca:
            context.load_verify_locations(ca)
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(
            f"--zk-tls-ca {ca}: not usable PEM certificates ({type(exc).__name__})"
        ) from None
    try:
        if cert and key:
            # A password callback, or OpenSSL would prompt on the terminal for one.
            context.load_cert_chain(cert, key, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(
            f"--zk-tls-cert/--zk-tls-key: not a usable PEM certificate "
            f"and unencrypted key ({type(exc).__name__})"
        ) from None


def zk_security_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options to a command, which receives them as one ``zk_security`` argument."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(zk_security=pop_zk_security(kwargs), **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(zk_security_option_list()):
        decorated = option(decorated)
    return decorated

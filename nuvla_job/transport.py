"""A lean keep-alive HTTP transport for ``nuvla.api``'s session.

``nuvla.api.Api`` sends every call through a ``requests.Session`` subclass. requests and
urllib3 spend about 0.7 ms of CPU per call preparing, pooling and wrapping, four times the
cost of the HTTP exchange itself; at hundreds of jobs per second that is most of an
executor's CPU. :class:`LeanTransport` replaces the session's ``_request`` (the one method
that sends) with a direct ``http.client`` exchange over pooled keep-alive connections. The
rest of the client is untouched: ``Api`` still builds the calls and reads the answers, the
session still re-authenticates on 401/403 and keeps its cookies.

Anything unusual goes through requests as before: proxies, client certificates, files or
streams, and the login and logout calls (``/api/session``).

Responses are read by :class:`LeanResponse`: ``http.client`` parses each header block with
the ``email`` package, about 30 µs a call (5 % of an executor's CPU at full speed); a job
API's answer needs only split lines. Requests go out in one ``send`` (:class:`LeanConnection`).
Both lean on ``http.client``'s private methods (``_read_status``, ``_check_close``,
``_send_output``), stable since Python 3.5; the unit tests compare them with the originals.
"""

from __future__ import annotations

import gzip
import http.client
import json as jsonlib
import select
import socket
import ssl
import time
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri

# Errors from a kept-alive connection the server already closed: the request never reached
# the application, so it may be sent again on a fresh connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Seconds after its last exchange during which an idle connection is reused unchecked.
_FRESH = 0.5
# Bounds on a response's header block, as http.client's own.
_MAX_LINE, _MAX_HEADERS = 65536, 100


class Headers:
    """A response's header fields, in order: what ``http.client`` and ``http.cookiejar``
    ask of a header block (``get``, ``get_all``, ``items``), names matched in any case."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._fields:
            if key.lower() == name:
                return value
        return default

    def get_all(self, name: str, default: Any = None) -> Any:
        name = name.lower()
        found = [value for key, value in self._fields if key.lower() == name]
        return found or default

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


class LeanResponse(http.client.HTTPResponse):
    """``http.client``'s response with a header block read as plain lines (no ``email``
    parser); the body is read by ``http.client`` as before (length, chunks, close)."""

    def begin(self) -> None:
        if self.headers is not None:
            return  # read already
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _read_fields(self.fp)  # an interim 100 answer: its fields are dropped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = Headers(_read_fields(self.fp))
        encoding = self.headers.get("transfer-encoding")
        self.chunked = encoding is not None and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length is not None and not self.chunked:
            if not length.strip().isdigit():
                raise http.client.HTTPException(f"bad Content-Length: {length!r}")
            self.length = int(length)
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class LeanConnection(http.client.HTTPConnection):
    """Answers read by :class:`LeanResponse`; a request's head and a bytes body sent in one
    ``send``: ``http.client`` sends them apart, two system calls and two segments for every
    call that carries a body (each edit)."""

    response_class = LeanResponse

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", message_body))  # type: ignore[attr-defined]
            data = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
            del self._buffer[:]  # type: ignore[attr-defined]
            self.send(data)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class LeanHTTPSConnection(LeanConnection, http.client.HTTPSConnection):
    pass


def _read_fields(fp: Any) -> list[tuple[str, str]]:
    """The fields of one header block, up to its empty line (continuation lines joined)."""
    fields: list[tuple[str, str]] = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return fields
        if len(fields) >= _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {text.strip()}")
            continue
        name, _, value = text.partition(":")
        fields.append((name.strip(), value.strip()))


class LeanTransport:
    """Sends a ``requests.Session``'s requests over pooled ``http.client`` connections.

    Install it with :meth:`install`; it is safe for many greenlets at once (each takes its
    own connection from the pool for the duration of one exchange).
    """

    def __init__(
        self,
        session: requests.Session,
        fallback: Callable[..., requests.Response],
        pool_size: int = 100,
    ) -> None:
        self.session = session
        self.fallback = fallback
        self.pool_size = pool_size
        # Idle connections with the time each was last put back.
        self._idle: dict[tuple[str, str, int], list[tuple[http.client.HTTPConnection, float]]] = {}
        self._ssl_context: ssl.SSLContext | None = None
        # (scheme, host, path or "/") -> (jar content, Cookie header, valid until)
        self._cookies: dict[tuple[str, str, str], tuple[tuple, str | None, float]] = {}

    @classmethod
    def install(cls, session: requests.Session, pool_size: int = 100) -> LeanTransport:
        """Route ``session``'s plain calls through a new transport; returns it."""
        transport = cls(session, session._request, pool_size)  # type: ignore[attr-defined]
        session._request = transport.request  # type: ignore[attr-defined]
        return transport

    # -- the session's `_request` -------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        **other: Any,
    ) -> requests.Response:
        if other or not self._plain(url, data):
            return self.fallback(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                json=json,
                timeout=timeout,
                allow_redirects=allow_redirects,
                **other,
            )
        # Quoted as requests would (an id with a space or a NUL must not break the line).
        url = requote_uri(url)
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{_form(params)}"
        # http.client sends str and bytes values alike, as requests allows both.
        all_headers: dict[str, str | bytes] = dict(self.session.headers)
        if headers:
            all_headers.update(headers)
        body = data
        if isinstance(data, dict):
            # A form, as requests encodes it (nuvla.api's search sends its query so).
            body = _form(data).encode()
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json is not None and data is None:
            body = jsonlib.dumps(json, allow_nan=False).encode()
            all_headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        parts = urlsplit(url)
        cookie = self._cookie_header(url, parts)
        if cookie:
            all_headers["Cookie"] = cookie
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        return self._exchange(method, url, parts, body, all_headers, seconds)

    def _cookie_header(self, url: str, parts: SplitResult) -> str | None:
        """The Cookie header for `url`, remembered while the jar and the time allow.

        The jar's own matching costs as much as the rest of a call; its answer only changes
        with the jar's content, the URL's path for cookies not set on "/", or an expiry.
        """
        jar = self.session.cookies
        content = tuple((c.name, c.value, c.domain, c.path, c.secure, c.expires) for c in jar)
        if any(cookie[3] != "/" for cookie in content):
            key = (parts.scheme, parts.netloc, parts.path)  # path-specific cookies
        else:
            key = (parts.scheme, parts.netloc, "/")
        cached = self._cookies.get(key)
        if cached is not None and cached[0] == content and time.time() < cached[2]:
            return cached[1]
        request = urllib.request.Request(url)
        jar.add_cookie_header(request)
        header = request.unredirected_hdrs.get("Cookie")
        expires = min((cookie[5] for cookie in content if cookie[5]), default=float("inf"))
        if len(self._cookies) > 64:
            self._cookies.clear()
        self._cookies[key] = (content, header, expires)
        return header

    def _plain(self, url: str, data: Any) -> bool:
        session = self.session
        if session.proxies or session.cert or "/api/session" in url:
            return False
        return data is None or isinstance(data, (bytes, str, dict))

    # -- connections ---------------------------------------------------------------------------

    def _connection(
        self, scheme: str, host: str, port: int, timeout: float | None
    ) -> tuple[http.client.HTTPConnection, bool]:
        idle = self._idle.get((scheme, host, port))
        while idle:
            conn, since = idle.pop()
            # A connection used moments ago is alive (and if the server closed it just
            # now, the stale-connection retry below covers it): skip the check then.
            fresh = time.monotonic() - since < _FRESH
            if conn.sock is not None and (fresh or not _dropped(conn.sock)):
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        if scheme == "https":
            conn = LeanHTTPSConnection(host, port, timeout=timeout, context=self._context())
        else:
            conn = LeanConnection(host, port, timeout=timeout)
        conn.connect()
        # Requests are small and answered at once: don't let Nagle hold them back.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, False

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            verify = self.session.verify
            if verify is False:
                context = ssl._create_unverified_context()  # the user asked: --api-insecure
            elif isinstance(verify, str):
                context = ssl.create_default_context(cafile=verify)
            else:
                context = ssl.create_default_context()
            self._ssl_context = context
        return self._ssl_context

    def _put_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self.pool_size:
            idle.append((conn, time.monotonic()))
        else:
            conn.close()

    # -- one exchange --------------------------------------------------------------------------

    def _exchange(
        self,
        method: str,
        url: str,
        parts: SplitResult,
        body: bytes | None,
        headers: dict[str, str | bytes],
        timeout: float | None,
    ) -> requests.Response:
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname or "", port)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):
            try:
                conn, reused = self._connection(scheme, key[1], port, timeout)
            except TimeoutError as exc:
                raise requests.exceptions.ConnectTimeout(str(exc)) from exc
            except OSError as exc:
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            try:
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
                content = raw.read()
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1 and method in _IDEMPOTENT:
                    continue
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            except TimeoutError as exc:
                conn.close()
                raise requests.exceptions.ReadTimeout(str(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            if raw.will_close:
                conn.close()
            else:
                self._put_back(key, conn)
            return self._response(method, url, raw, content)
        raise AssertionError("unreachable")

    def _response(
        self, method: str, url: str, raw: http.client.HTTPResponse, content: bytes
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = raw.status
        response.reason = raw.reason
        response.url = url
        response.headers = CaseInsensitiveDict(raw.getheaders())
        encoding = response.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            content = gzip.decompress(content)
        elif encoding == "deflate":
            content = zlib.decompress(content)
        response._content = content
        response.encoding = "utf-8"
        if "Set-Cookie" in response.headers:
            request = urllib.request.Request(url, method=method)
            self.session.cookies.extract_cookies(raw, request)
        return response


def _form(values: dict[str, Any]) -> str:
    """URL-encode as requests does: lists give repeated keys, None values are left out."""
    return urlencode(
        [(key, value) for key, value in values.items() if value is not None], doseq=True
    )


def _dropped(sock: socket.socket) -> bool:
    """Whether the server closed a kept-alive connection: an idle one has nothing to read
    unless it was closed (EOF) or broken."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)

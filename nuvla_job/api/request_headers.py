"""HTTP request headers read straight from the connection, for gevent's WSGI handler.

gevent builds its request headers with ``http.client.parse_headers``, which runs the email
package's feed parser: a sixth of the job API's CPU per request. :class:`RequestHeaders`
reads the same lines with the same limits (line length, header count) and offers the part
of that object's interface gevent's handler uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# http.client's limits, which gevent's parser applies too.
MAX_LINE = 65536
MAX_HEADERS = 100


class RequestHeaders:
    """The header lines of one request: ``get`` ignores case and returns the first value."""

    def __init__(self, items: list[tuple[str, str]], status: str = "") -> None:
        self._items = items
        # gevent answers 400 when this is not empty.
        self.status = status

    @classmethod
    def read(cls, rfile: Any) -> RequestHeaders:
        items: list[tuple[str, str]] = []
        while True:
            line = rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                return cls([], "Line too long")
            if line in (b"\r\n", b"\n", b""):
                return cls(items)
            if len(items) >= MAX_HEADERS:
                return cls([], "Too many headers")
            text = line.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and items:
                # An obsolete folded line continues the previous header.
                key, value = items[-1]
                items[-1] = (key, f"{value} {text.strip()}")
                continue
            key, sep, value = text.partition(":")
            if not sep or not key or key != key.strip():
                return cls([], "Invalid header line")
            items.append((key, value.strip()))

    def get(self, name: str, default: Any = None) -> Any:
        name = name.lower()
        for key, value in self._items:
            if key.lower() == name:
                return value
        return default

    getheader = get

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __delitem__(self, name: str) -> None:
        name = name.lower()
        self._items = [(key, value) for key, value in self._items if key.lower() != name]

    @property
    def headers(self) -> Iterator[str]:
        """The lines as gevent's handler turns them into the WSGI environ."""
        for key, value in self._items:
            yield f"{key}: {value}\r\n"

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")

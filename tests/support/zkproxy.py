"""A TCP proxy in front of ZooKeeper that notes the session each connection was given.

A test can then expire the session of a client running in another process, the way kazoo's
own tests expire one: join the session with its id and password from a second client, and
close it. The server ends the session and drops the first client's connection; its next
connect is answered "session expired" (kazoo's LOST state), while the process runs on.

ZooKeeper's connect answer (the first frame the server sends on a connection) is: a 4-byte
length, then protocol version (int32), session timeout (int32), session id (int64) and
the password (int32 length + bytes). Every byte is forwarded unchanged.

It can also cut the link (:meth:`cut`: every connection dropped, new ones closed at once)
and mend it (:meth:`mend`), so that one process sees its connection suspended while
ZooKeeper and everyone else go on; back within the session timeout, it keeps its session.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

_CHUNK = 65536


class SessionNotingProxy:
    """Listens on 127.0.0.1 and forwards each connection to ``upstream`` ("host:port")."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split(",")[0].rpartition(":")
        self.upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._sessions: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def session(self, timeout: float = 15.0) -> tuple[int, bytes]:
        """(session id, password) of the latest connection given a live session."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                live = [s for s in self._sessions if s[0] != 0]
            if live:
                return live[-1]
            if time.monotonic() > deadline:
                raise AssertionError("no client got a session through the proxy")
            time.sleep(0.02)

    def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`mend`."""
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, []
        _close(sockets)

    def mend(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        _close([self._listener, *sockets])

    def __enter__(self) -> SessionNotingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close([client])
                continue
            with self._lock:
                cut = self._cut
                if not cut:
                    self._sockets += [client, server]
            if cut:
                _close([client, server])
                continue
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        first = bytearray() if answers else None  # the server's connect answer, until whole
        try:
            while data := source.recv(_CHUNK):
                if first is not None:
                    first += data
                    if self._note_session(first):
                        first = None
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):  # one side closed: close the other (a lost link)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _note_session(self, frame: bytearray) -> bool:
        """Note the session of a whole connect answer; False while it is incomplete."""
        if len(frame) < 4 or len(frame) < 4 + struct.unpack(">i", frame[:4])[0]:
            return False
        if len(frame) >= 24:
            _version, _timeout, session_id, length = struct.unpack(">iiqi", frame[4:24])
            with self._lock:
                self._sessions.append((session_id, bytes(frame[24 : 24 + length])))
        return True


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

"""The context-manager shape shared by the local services (ZooKeeper, ensemble, job API)."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class Service:
    """`with service:` starts it and closes it; a failed start is closed too.

    Subclasses provide `start()` and `close()` (close must be safe on a half-started one).
    """

    def start(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            self.start()
        except BaseException:
            self.close()  # a half-started service still has processes and files
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Errors the job API answers with: an HTTP status and a message for the caller."""

from __future__ import annotations


class ApiError(Exception):
    """A request that cannot be served; becomes ``{"status", "message", "resource-id"}``."""

    def __init__(
        self, status: int, message: str, resource_id: str | None = None, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.resource_id = resource_id
        # The request was not read to its end (a body refused half-way): the connection
        # cannot carry another request.
        self.close = close

    def body(self) -> dict:
        body: dict = {"status": self.status, "message": self.message}
        if self.resource_id:
            body["resource-id"] = self.resource_id
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def forbidden(resource_id: str | None = None) -> ApiError:
    return ApiError(403, "invalid credentials", resource_id)


def not_found(resource_id: str) -> ApiError:
    return ApiError(404, f"{resource_id} not found", resource_id)

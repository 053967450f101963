"""Errors the domain raises. Adapters (MCP, REST, CLI) turn them into tool errors, 4xx answers or exit codes."""

__all__ = [
    "MemoryServiceError",
    "InvalidInput",
    "NotFound",
    "IdempotencyConflict",
    "LogIntegrityError",
    "StorageError",
]


class MemoryServiceError(Exception):
    """Base of every error whose message is meant for a person."""

    code = "error"


class InvalidInput(MemoryServiceError):
    code = "invalid_input"


class NotFound(MemoryServiceError):
    code = "not_found"


class IdempotencyConflict(MemoryServiceError):
    """The same event id arrived again with different content."""

    code = "idempotency_conflict"


class LogIntegrityError(MemoryServiceError):
    """A user's event log fails verification; that user's calls stop until an operator looks."""

    code = "log_integrity"


class StorageError(MemoryServiceError):
    """The disk refused a write (full, read-only); nothing half-written remains."""

    code = "storage"

"""The processor's exception tree.

Each error says whether retrying can help (``retriable``) and which dead-letter
``kind`` it ends as when it does not::

    ProcessorError
    ├── InvalidEvent          invalid_event     the event is not a valid image event
    ├── BlockedUrl            blocked_url       scheme or address the processor may not fetch
    ├── FetchFailed           fetch_failed      HTTP 4xx, too many redirects, network errors
    │   └── TransientFetchError (retriable)     5xx, 429, timeouts, connection resets
    ├── TooLarge              too_large         byte or pixel cap exceeded
    ├── NotAnImage            not_an_image      body is not a decodable image
    ├── ModelError            model_error       the model failed on this image alone
    └── StorageRejected       storage_rejected  Postgres or the broker refuses this one item for good

Storage failures (Postgres, broker) are not errors of an event: the sink retries them until they
succeed. Only a failure that belongs to one item (``rejects_item``: a value Postgres cannot store,
a record over the broker's size limit) becomes that item's dead letter, after bounded attempts.
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Base of every error the processor raises on purpose."""

    kind = "internal_error"
    retriable = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidEvent(ProcessorError):
    kind = "invalid_event"


class BlockedUrl(ProcessorError):
    kind = "blocked_url"


class FetchFailed(ProcessorError):
    kind = "fetch_failed"


class TransientFetchError(FetchFailed):
    retriable = True

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooLarge(ProcessorError):
    kind = "too_large"


class NotAnImage(ProcessorError):
    kind = "not_an_image"


class ModelError(ProcessorError):
    kind = "model_error"


class StorageRejected(ProcessorError):
    kind = "storage_rejected"


# SQLSTATE classes of errors caused by the row itself: data exception, integrity constraint
# violation, program limit exceeded (e.g. a row too large).
ITEM_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
ITEM_KAFKA_ERRORS = frozenset({"MessageSizeTooLargeError", "RecordTooLargeError"})


def rejects_item(exc: BaseException) -> bool:
    """True when a storage error is about the item written, not an outage: retrying the same item
    cannot help. Anything else (connections, timeouts, auth, unknown) counts as an outage and is
    retried, so a misconfiguration stalls the worker (and alerts) instead of dead-lettering everything."""
    if type(exc).__name__ in ITEM_KAFKA_ERRORS:
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in ITEM_SQLSTATE_CLASSES
    return isinstance(exc, ValueError | TypeError | OverflowError | RecursionError | UnicodeError)

"""Translation of boto3/botocore exceptions into the polybus error tree, at the adapter's boundary.

Every boto3 call of the adapter goes through :func:`translate`; nothing from botocore escapes.
``TransientBrokerError`` marks failures worth retrying (unreachable endpoint, timeouts, throttling,
server-side errors); authentication and validation failures are not retried. Messages are
scrubbed of the secret key. Imports only polybus and botocore.
"""

from __future__ import annotations

from botocore import exceptions as boto_errors

from polybus import (
    BrokerConnectionError,
    ConfigurationError,
    NotFoundError,
    PolybusError,
    PublishError,
)

__all__ = ["TransientBrokerError", "error_code", "translate"]


class TransientBrokerError(BrokerConnectionError):
    """The endpoint could not be reached, timed out, throttled or failed on its side; worth retrying."""


_NOT_FOUND = {
    "NotFound",
    "NotFoundException",
    "ResourceNotFoundException",
    "NonExistentQueue",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
}
_AUTH = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "InvalidSecurity",
    "MissingAuthenticationToken",
}
_TRANSIENT = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KMSThrottling",
    "SlowDown",
}
_CONNECTION = (
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectionClosedError,
    boto_errors.ConnectTimeoutError,
    boto_errors.ReadTimeoutError,
    boto_errors.ProxyConnectionError,
    boto_errors.HTTPClientError,
)
_CONFIG = (
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.NoRegionError,
    boto_errors.ProfileNotFound,
    boto_errors.ParamValidationError,
    boto_errors.InvalidRegionError,
    boto_errors.UnknownEndpointError,
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(exc, boto_errors.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def translate(
    exc: BaseException, what: str, *, secret: str | None = None, default: type[PolybusError] = PolybusError
) -> PolybusError:
    """The polybus error for ``exc`` raised while doing ``what``; raise it ``from exc``."""
    if isinstance(exc, PolybusError):
        return exc
    text = _scrub(f"{what} failed: {type(exc).__name__}: {exc}", secret)
    if isinstance(exc, boto_errors.ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _NOT_FOUND:
            return NotFoundError(text)
        if code in _AUTH:
            return BrokerConnectionError(f"{text} (check the credentials and their permissions)")
        if code in _TRANSIENT or status >= 500 or status == 429:
            return TransientBrokerError(text)
        return default(text)
    if isinstance(exc, boto_errors.SSLError):
        return BrokerConnectionError(f"{text} (check tls / verify)")
    if isinstance(exc, _CONNECTION):
        return TransientBrokerError(text)
    if isinstance(exc, _CONFIG):
        return ConfigurationError(text)
    if isinstance(exc, boto_errors.BotoCoreError | OSError):
        return TransientBrokerError(text)
    if default is PublishError:
        return PublishError(text)
    return PolybusError(text)

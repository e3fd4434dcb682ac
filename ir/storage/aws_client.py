"""AWS plumbing shared by the S3 store and the Lambda engine: a lazily made client, and
the one classifier of botocore errors (config / transient / not found / failed).

Both AWS users here (the S3 store and the Lambda engine) need the same thing: a client
that is created inside the running event loop (aiobotocore clients are bound to it),
only once even when many coroutines ask at the same moment, with our timeouts and
with botocore's own retries off (the callers own retrying), and closed cleanly.
"""

from __future__ import annotations

import asyncio
import errno
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from ir.errors import first_line

from ..errors import ConfigError


class LazyClient:
    def __init__(
        self,
        service: str,
        *,
        region: str | None,
        endpoint_url: str | None,
        connect_timeout: float,
        read_timeout: float,
        max_pool_connections: int,
        session: Any = None,
        **config: Any,
    ):
        """``config``: further ``AioConfig`` options (e.g. ``s3={...}``); ``session``: an
        aiobotocore session to share (it keeps loaded service models)."""
        self.service = service
        self._client_args = {"region_name": region, "endpoint_url": endpoint_url}
        self._config = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"max_attempts": 0},
            "max_pool_connections": max_pool_connections,
            **config,
        }
        self._session = session
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                session = self._session or get_session()
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    # The stubs type create_client per literal service name; ours is a variable.
                    session.create_client(  # type: ignore[call-overload]
                        self.service, config=AioConfig(**self._config), **self._client_args)
                )
                self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()


# -- what went wrong: one classifier for every botocore error -------------------------

# Error codes that mean a setting is wrong: the bucket or function, the credentials,
# their permissions. Retrying cannot fix them, so they are never retried.
CONFIG_CODES = frozenset({
    "NoSuchBucket", "InvalidBucketName", "AccessDenied", "AccessDeniedException", "AllAccessDisabled",
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "InvalidToken",
    "TokenRefreshRequired", "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
    "MissingAuthenticationToken", "IncompleteSignature", "AuthorizationHeaderMalformed", "PermanentRedirect",
    "AccountProblem", "NotSignedUp", "ResourceNotFoundException", "KMSAccessDeniedException",
    "InvalidParameterValueException",
})
# Error codes worth another attempt: throttling and the service's own trouble.
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "TooManyRequestsException",
    "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "ServiceException",
    "EC2ThrottledException", "ResourceConflictException", "ResourceNotReadyException",
    "500", "502", "503", "504", "429",
})
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
CREDENTIALS_HINT = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"


@dataclass(frozen=True)
class AwsFault:
    """What a failed AWS request means for the caller.

    ``kind``: ``config`` (a setting is wrong: stop, name ``setting`` or the caller's
    own), ``transient`` (worth another attempt: throttling, 5xx, the network),
    ``not_found`` (a key or object that is not there: the caller decides), ``local``
    (this machine's disk, e.g. full: re-raised as it is, the caller's host decides) or
    ``failed`` (anything else: not retried, not a setting either).
    """

    kind: str
    reason: str
    code: str = ""
    setting: str = ""  # set when the fix is not the caller's own setting (credentials, TLS)


def classify(exc: BaseException) -> AwsFault:
    """Classify an exception raised by an aiobotocore call (the one place that does)."""
    import ssl

    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
        SSLError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code") or status)
        message = first_line(error["Message"]) if error.get("Message") else ""
        reason = f"{code} (HTTP {status})" + (f": {message}" if message else "")
        if code in NOT_FOUND_CODES:
            return AwsFault("not_found", reason, code)
        if code in TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
            return AwsFault("transient", reason, code)
        credentials = code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                               "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
                               "ExpiredTokenException", "MissingAuthenticationToken")
        if code in CONFIG_CODES or status in (401, 403):
            return AwsFault("config", reason, code, CREDENTIALS_HINT if credentials else "")
        return AwsFault("failed", reason, code)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsFault("config", f"no usable AWS credentials ({first_line(exc)})", type(exc).__name__,
                        CREDENTIALS_HINT)
    if isinstance(exc, SSLError | ssl.SSLError) or "SSL" in type(exc).__name__ or "[SSL" in str(exc):
        return AwsFault("config", f"TLS failed ({first_line(exc)}): is the endpoint plain http, not https?",
                        "SSLError")
    if isinstance(exc, ParamValidationError | NoRegionError):
        return AwsFault("config", first_line(exc), type(exc).__name__)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
        return AwsFault("transient", f"cannot connect: {first_line(exc)}", type(exc).__name__)
    if isinstance(exc, ReadTimeoutError):
        return AwsFault("transient", f"read timed out: {first_line(exc)}", type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return AwsFault("transient", "request timed out", "TimeoutError")
    if isinstance(exc, BotoCoreError):
        return AwsFault("failed", first_line(exc), type(exc).__name__)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return AwsFault("local", first_line(exc), type(exc).__name__)
    if isinstance(exc, OSError | ConnectionError):
        return AwsFault("transient", f"connection error: {first_line(exc)}", type(exc).__name__)
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ClientError):
            return AwsFault("transient", f"connection error: {first_line(exc)}", type(exc).__name__)
    except ImportError:  # pragma: no cover - aiohttp comes with aiobotocore
        pass
    return AwsFault("failed", f"{type(exc).__name__}: {first_line(exc)}", type(exc).__name__)


def config_error(fault: AwsFault, subject: str, setting: str) -> ConfigError:
    """The one line for a configuration fault: what, why, and the setting to fix."""
    return ConfigError(f"{subject}: {fault.reason} (check {fault.setting or setting})")

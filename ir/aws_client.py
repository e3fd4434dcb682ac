"""An aiobotocore client made on first use, shared by concurrent users, closed once.

Both AWS users here (the S3 store and the Lambda engine) need the same thing: a client
that is created inside the running event loop (aiobotocore clients are bound to it),
only once even when many coroutines ask at the same moment, with our timeouts and
with botocore's own retries off (the callers own retrying), and closed cleanly.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any


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
                    session.create_client(self.service, config=AioConfig(**self._config), **self._client_args)
                )
                self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

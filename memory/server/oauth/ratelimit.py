"""Litestar's rate limiter answering 429 with a Retry-After header: keyed by client address for
the OAuth endpoints (nobody is signed in yet), by principal for tool and API calls (a client
address says little behind a proxy or for ChatGPT, whose calls all come from its servers)."""

from typing import Any

from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.types import Message, Send

__all__ = ["oauth_rate_limit", "principal_rate_limit"]


class _RetryAfterRateLimit(RateLimitMiddleware):
    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        # RFC 9110 §10.2.3: the one header every client knows how to wait on.
        headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers

    def create_send_wrapper(self, send: Send, cache_object: CacheObject) -> Send:
        # A request let through gets the RateLimit-* headers but never Retry-After: a client that
        # honours it would wait after every answer. (Litestar uses one header builder for both.)
        headers = super().create_response_headers(cache_object)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                mutable = MutableScopeHeaders(message)
                for key, value in headers.items():
                    mutable[key] = value
            await send(message)

        return send_with_headers


def oauth_rate_limit(per_minute: int) -> DefineMiddleware:
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_RetryAfterRateLimit,
                           store="oauth_rate_limit").middleware


def _principal_key(request: Request[Any, Any, Any]) -> str:
    from memory.server.auth import PRINCIPAL_SCOPE_KEY

    return request.scope[PRINCIPAL_SCOPE_KEY].identity.key  # type: ignore[typeddict-item]


def principal_rate_limit(per_minute: int) -> DefineMiddleware:
    """Goes after the bearer middleware, which puts the principal in the scope."""
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_RetryAfterRateLimit,
                           store="call_rate_limit", identifier_for_request=_principal_key).middleware

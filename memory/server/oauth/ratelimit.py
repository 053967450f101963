"""Litestar's rate limiter, keyed by client address, answering 429 with a Retry-After header."""

from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware

__all__ = ["oauth_rate_limit"]


class _RetryAfterRateLimit(RateLimitMiddleware):
    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        # RFC 9110 §10.2.3: the one header every client knows how to wait on.
        headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers


def oauth_rate_limit(per_minute: int) -> DefineMiddleware:
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_RetryAfterRateLimit,
                           store="oauth_rate_limit").middleware

"""The built-in OAuth 2.1 authorization server: local accounts, registered clients and client
metadata documents, codes with PKCE, rotating refresh tokens. `endpoints` is the HTTP surface;
`store`, `passwords` and `clients` import no web framework, so `memory user ...` stays fast."""

__all__: list[str] = []

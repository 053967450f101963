"""A bug in a handler is a bare 500 for the caller (no trace, no internals) and a trace in the
log for the operator. In process, with a service made to fail: a real server cannot be made to."""

import logging

import pytest
from litestar.testing import TestClient
from server_calls import bearer

from memory.server.app import create_app
from memory.server.auth import issue_personal_token
from memory.server.oauth.store import OAuthStore
from memory.server.settings import ServerSettings
from memory.service import MemoryService


@pytest.fixture()
def failing_app(data_dir, embedder, monkeypatch):
    service = MemoryService(data_dir, embedder)

    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internal detail /etc/shadow")

    monkeypatch.setattr(service, "get", broken)
    settings = ServerSettings(data_dir=str(data_dir), port=8000)
    store = OAuthStore(data_dir)
    token = issue_personal_token(service.keys, store, issuer=settings.base_url, audience=settings.resource_url,
                                 user="alice", name="cli", scopes=["memories:read"], ttl_seconds=60,
                                 max_ttl_seconds=settings.personal_token_max_ttl_seconds)
    store.close()
    return create_app(settings, service=service), token


def test_an_unexpected_error_is_a_bare_500_and_a_logged_trace(failing_app, caplog):
    app, token = failing_app
    with caplog.at_level(logging.ERROR, logger="memory.server"), TestClient(app) as client:
        response = client.get("/api/v1/memories/some-id", headers=bearer(token))
    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text
    (record,) = [r for r in caplog.records if r.name == "memory.server"]
    assert record.exc_info and "secret internal detail" in str(record.exc_info[1])

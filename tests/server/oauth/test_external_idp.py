"""External identity provider mode: a second local process plays the provider (it publishes a JWKS),
tokens it signs reach a log keyed by (its issuer, the subject), and forgeries are refused."""

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from server_calls import bearer

from memory.server.process import ServerProcess, free_port

KID = "idp-key-1"


class Provider:
    """The identity provider: its key, its issuer URL, and the JWKS it serves from its own process."""

    def __init__(self, root: Path):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_url = f"{self.issuer}/jwks.json"
        jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True), "kid": KID, "use": "sig",
               "alg": "RS256"}
        root.mkdir(parents=True, exist_ok=True)
        (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        self.process = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                         "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(self.jwks_url, timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("the provider did not start")

    def token(self, server: ServerProcess, *, key=None, headers: dict | None = None, algorithm: str = "RS256",
              **overrides) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "auth0|4242", "aud": server.mcp_url, "iat": now, "nbf": now,
                  "exp": now + 300, "scope": "memories:read memories:write", "azp": "chatgpt", **overrides}
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, key or self.key, algorithm=algorithm,
                          headers={"kid": KID, **(headers or {})})

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    running = Provider(tmp_path_factory.mktemp("idp"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def idp_server(tmp_path_factory: pytest.TempPathFactory, provider: Provider) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("idp-server") / "data"
    with ServerProcess(data_dir, extra_args=["--idp-issuer", provider.issuer,
                                             "--idp-jwks-url", provider.jwks_url]) as server:
        server.wait_ready()
        yield server


@pytest.fixture()
def http(idp_server: ServerProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=idp_server.url, timeout=30) as client:
        yield client


def test_resource_metadata_points_to_the_external_provider_and_the_built_in_server_is_off(idp_server, provider,
                                                                                            http):
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        assert http.get(path).json()["authorization_servers"] == [provider.issuer]
    assert http.get("/.well-known/oauth-authorization-server").status_code == 404
    assert http.get("/authorize").status_code == 404
    assert "memory user add" not in idp_server.log_tail()


def test_a_provider_token_reaches_the_log_of_the_providers_subject(idp_server, provider, http):
    marker = uuid.uuid4().hex
    stored = http.post("/api/v1/memories", json={"text": f"From the provider {marker}"},
                       headers=bearer(provider.token(idp_server)))
    assert stored.status_code == 201, stored.text
    again = http.get(f"/api/v1/memories/{stored.json()['id']}", headers=bearer(provider.token(idp_server)))
    assert again.status_code == 200
    # A local account with the same subject is another person.
    local = http.get(f"/api/v1/memories/{stored.json()['id']}", headers=bearer(idp_server.token("auth0|4242")))
    assert local.status_code == 404
    stats = subprocess.run([str(Path(sys.executable).parent / "memory"), "stats", "--json", "--data-dir",
                            str(idp_server.data_dir)], capture_output=True, text=True, check=True)
    assert f"{provider.issuer}#auth0|4242" in [row["user"] for row in json.loads(stats.stdout)["per_user"]]


def test_a_provider_token_without_the_write_scope_cannot_write(idp_server, provider, http):
    token = provider.token(idp_server, scope="memories:read")
    written = http.post("/api/v1/memories", json={"text": "nope"}, headers=bearer(token))
    assert written.status_code == 403 and 'error="insufficient_scope"' in written.headers["www-authenticate"]
    assert http.get("/api/v1/entities", headers=bearer(token)).status_code == 200


def _public_pem(provider: Provider) -> bytes:
    return provider.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with_public_key(server, provider) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": provider.issuer, "sub": "x", "aud": server.mcp_url, "iat": now, "exp": now + 300}
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': KID}).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(hmac.new(_public_pem(provider), signing_input.encode(), hashlib.sha256).digest())}"


FORGERIES = {
    "wrong audience": lambda s, p: p.token(s, aud="https://other.example/mcp"),
    "missing audience": lambda s, p: p.token(s, aud=None),
    "expired": lambda s, p: p.token(s, exp=int(time.time()) - 120),
    "not valid yet": lambda s, p: p.token(s, nbf=int(time.time()) + 600),
    "wrong issuer": lambda s, p: p.token(s, iss="https://evil.example"),
    "another key under the provider's kid": lambda s, p: p.token(
        s, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "unknown kid": lambda s, p: p.token(s, headers={"kid": "nope"}),
    "jku header": lambda s, p: p.token(s, headers={"jku": "https://evil.example/jwks.json"}),
    "HS256 keyed with the public key": _hs256_with_public_key,
    "alg none": lambda s, p: jwt.encode({"iss": p.issuer, "sub": "x", "aud": s.mcp_url,
                                         "exp": int(time.time()) + 300}, None, algorithm="none",
                                        headers={"kid": KID}),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_provider_token_is_refused(idp_server, provider, http, forgery):
    response = http.get("/api/v1/entities", headers=bearer(FORGERIES[forgery](idp_server, provider)))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_memory_token_still_works_beside_the_provider(idp_server, http):
    assert http.get("/api/v1/entities", headers=bearer(idp_server.token("script"))).status_code == 200

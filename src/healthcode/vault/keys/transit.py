"""HashiCorp Vault / OpenBao transit backend (through hvac).

- KEK: transit key ``healthcode-vault-kek`` (aes256-gcm96); data keys are wrapped with
  ``transit/encrypt`` and unwrapped with ``transit/decrypt`` using ``batch_input`` (chunks of at
  most ``transit_batch_size``, under OpenBao's JSON complexity limit).
- Blind index: ``transit/hmac`` with a separate key ``healthcode-vault-bidx``, pinned to key
  version 1 so that indexes stay stable. hvac's ``generate_hmac`` has no batch input, so raw
  requests go through the hvac adapter.
- Authentication: ``VAULT_TOKEN``, or AppRole (``VAULT_ROLE_ID`` / ``VAULT_SECRET_ID``) with a
  re-login when the token is refused.
- One hvac client (one HTTP connection pool) per worker thread.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import hvac
import requests

from healthcode.vault.keys.base import BackendUnavailable, KeyStatus, UnwrapFailure, WrappedKey
from healthcode.vault.settings import VaultSettings

_BIDX_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class TransitBackend:
    """Keys that never leave Vault/OpenBao."""

    name = "transit"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        namespace: str | None = None,
        verify: str | bool = True,
        mount: str = "transit",
        kek_name: str = "healthcode-vault-kek",
        bidx_name: str = "healthcode-vault-bidx",
        timeout: float = 3.0,
        batch_size: int = 250,
    ) -> None:
        if not token and not (role_id and secret_id):
            raise ValueError("transit backend needs VAULT_TOKEN or VAULT_ROLE_ID + VAULT_SECRET_ID")
        self._url = url
        self._token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self._namespace = namespace
        self._verify = verify
        self._mount = mount.strip("/")
        self._kek = kek_name
        self._bidx = bidx_name
        self._timeout = timeout
        self._batch = batch_size
        self._local = threading.local()
        self._token_lock = threading.Lock()
        self._keys_ready = False

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> TransitBackend:
        """Build from ``VAULT_ADDR`` / ``VAULT_TOKEN`` / AppRole settings."""
        if not settings.transit_addr:
            raise ValueError("transit backend needs VAULT_ADDR (or HEALTHCODE_VAULT_TRANSIT_ADDR)")
        return cls(
            settings.transit_addr,
            token=settings.transit_token.get_secret_value() if settings.transit_token else None,
            role_id=settings.approle_role_id,
            secret_id=(
                settings.approle_secret_id.get_secret_value()
                if settings.approle_secret_id
                else None
            ),
            namespace=settings.transit_namespace,
            verify=settings.transit_cacert or True,
            mount=settings.transit_mount,
            kek_name=settings.transit_kek_name,
            bidx_name=settings.transit_bidx_name,
            timeout=settings.transit_timeout,
            batch_size=settings.transit_batch_size,
        )

    # -- HTTP plumbing -------------------------------------------------------------------------

    def _client(self) -> hvac.Client:
        client: hvac.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = hvac.Client(
                url=self._url,
                token=self._token,
                namespace=self._namespace,
                verify=self._verify,
                timeout=self._timeout,
                adapter=hvac.adapters.RawAdapter,
            )
            self._local.client = client
        if self._token is None:
            self._login()
        client.token = self._token
        return client

    def _login(self) -> None:
        with self._token_lock:
            if self._token is not None:
                return
            client = hvac.Client(
                url=self._url, namespace=self._namespace, verify=self._verify, timeout=self._timeout
            )
            try:
                result = client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise BackendUnavailable(
                    "KEY_BACKEND_UNAVAILABLE", "key backend unreachable during AppRole login"
                ) from exc
            except hvac.exceptions.VaultError as exc:
                raise BackendUnavailable(
                    "KEY_BACKEND_AUTH_FAILED", "AppRole login to the key backend failed"
                ) from exc
            self._token = str(result["auth"]["client_token"])

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        for attempt in range(2):
            client = self._client()
            try:
                response = client.adapter.request(
                    method, f"/v1/{path}", json=payload, raise_exception=False
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise BackendUnavailable(
                    "KEY_BACKEND_UNAVAILABLE", "key backend (Vault/OpenBao) is unreachable"
                ) from exc
            status = response.status_code
            if status == 503:
                raise BackendUnavailable(
                    "KEY_BACKEND_SEALED", "key backend (Vault/OpenBao) is sealed"
                )
            if status == 403 and self._role_id and attempt == 0:
                with self._token_lock:
                    self._token = None
                continue
            if status == 403:
                raise BackendUnavailable(
                    "KEY_BACKEND_PERMISSION_DENIED", "key backend refused the vault's token"
                )
            if status == 204:
                return {}
            try:
                body = response.json()
            except ValueError:
                body = {}
            if status >= 500:
                raise BackendUnavailable("KEY_BACKEND_ERROR", f"key backend answered HTTP {status}")
            return {"_status": status, **body}
        raise BackendUnavailable("KEY_BACKEND_AUTH_FAILED", "key backend refused the vault's token")

    def _batch_call(
        self, path: str, items: list[dict[str, Any]], extra: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        self._ensure_keys()
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), self._batch):
            chunk = items[start : start + self._batch]
            payload = {"batch_input": chunk, "partial_failure_response_code": 207, **(extra or {})}
            body = self._request("POST", path, payload)
            batch = body.get("data", {}).get("batch_results")
            if not isinstance(batch, list) or len(batch) != len(chunk):
                # The backend's error text is not passed on: it could echo request material.
                raise BackendUnavailable(
                    "KEY_BACKEND_ERROR",
                    f"transit batch call failed ({len(body.get('errors') or [])} errors)",
                )
            results.extend(batch)
        return results

    def _ensure_keys(self) -> None:
        if self._keys_ready:
            return
        for name in (self._kek, self._bidx):
            body = self._request("GET", f"{self._mount}/keys/{name}")
            if body.get("_status") == 404:
                created = self._request(
                    "POST", f"{self._mount}/keys/{name}", {"type": "aes256-gcm96"}
                )
                if created.get("_status", 200) >= 400:
                    raise BackendUnavailable(
                        "KEY_BACKEND_ERROR",
                        f"cannot create transit key {name}: {created.get('errors')}",
                    )
            elif body.get("_status", 200) >= 400:
                raise BackendUnavailable(
                    "KEY_BACKEND_ERROR", f"cannot read transit key {name}: {body.get('errors')}"
                )
        self._keys_ready = True

    # -- KeyBackend ----------------------------------------------------------------------------

    def check(self) -> None:
        """``sys/health``: sealed or unreachable raises :class:`BackendUnavailable`."""
        client = self._client()
        try:
            response = client.adapter.request("GET", "/v1/sys/health", raise_exception=False)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise BackendUnavailable(
                "KEY_BACKEND_UNAVAILABLE", "key backend (Vault/OpenBao) is unreachable"
            ) from exc
        if response.status_code == 503:
            raise BackendUnavailable("KEY_BACKEND_SEALED", "key backend (Vault/OpenBao) is sealed")
        if response.status_code not in (200, 429, 472, 473):
            raise BackendUnavailable(
                "KEY_BACKEND_UNAVAILABLE",
                f"key backend health answered HTTP {response.status_code}",
            )

    def wrap(self, keys: list[bytes]) -> list[WrappedKey]:
        """``transit/encrypt`` in batches."""
        results = self._batch_call(
            f"{self._mount}/encrypt/{self._kek}", [{"plaintext": _b64(k)} for k in keys]
        )
        out = []
        for item in results:
            if item.get("error"):
                raise BackendUnavailable("KEY_BACKEND_ERROR", "transit encrypt failed")
            text = str(item["ciphertext"])
            out.append(WrappedKey(text, int(text.split(":")[1].removeprefix("v"))))
        return out

    def unwrap(self, wrapped: list[str]) -> list[bytes]:
        """``transit/decrypt`` in batches; an authentication failure names the bad item."""
        results = self._batch_call(
            f"{self._mount}/decrypt/{self._kek}", [{"ciphertext": c} for c in wrapped]
        )
        out = []
        for index, item in enumerate(results):
            if item.get("error") or "plaintext" not in item:
                raise UnwrapFailure(index)
            out.append(base64.b64decode(item["plaintext"]))
        return out

    def rewrap(self, wrapped: list[str]) -> list[WrappedKey]:
        """``transit/rewrap``: the data keys never leave OpenBao in plaintext."""
        results = self._batch_call(
            f"{self._mount}/rewrap/{self._kek}", [{"ciphertext": c} for c in wrapped]
        )
        out = []
        for index, item in enumerate(results):
            if item.get("error"):
                raise UnwrapFailure(index)
            text = str(item["ciphertext"])
            out.append(WrappedKey(text, int(text.split(":")[1].removeprefix("v"))))
        return out

    def blind_index(self, messages: list[bytes]) -> list[bytes]:
        """``transit/hmac`` with the dedicated key, pinned to version 1."""
        results = self._batch_call(
            f"{self._mount}/hmac/{self._bidx}/sha2-256",
            [{"input": _b64(m)} for m in messages],
            {"key_version": _BIDX_VERSION},
        )
        out = []
        for item in results:
            if item.get("error") or "hmac" not in item:
                raise BackendUnavailable("KEY_BACKEND_ERROR", "transit hmac failed")
            out.append(base64.b64decode(str(item["hmac"]).split(":", 2)[2]))
        return out

    def status(self) -> KeyStatus:
        """Read the KEK's versions."""
        self._ensure_keys()
        body = self._request("GET", f"{self._mount}/keys/{self._kek}")
        data = body.get("data", {})
        return KeyStatus(int(data["latest_version"]), int(data["min_decryption_version"]))

    def rotate(self) -> KeyStatus:
        """``transit/keys/<kek>/rotate``."""
        self._ensure_keys()
        self._request("POST", f"{self._mount}/keys/{self._kek}/rotate", {})
        return self.status()

    def retire(self, min_decryption_version: int) -> KeyStatus:
        """Raise the KEK's ``min_decryption_version``."""
        self._ensure_keys()
        self._request(
            "POST",
            f"{self._mount}/keys/{self._kek}/config",
            {"min_decryption_version": min_decryption_version},
        )
        return self.status()

    def close(self) -> None:
        """Close this thread's HTTP session (others close with their threads)."""
        client: hvac.Client | None = getattr(self._local, "client", None)
        if client is not None:
            client.adapter.close()

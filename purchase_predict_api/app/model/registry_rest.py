"""A registered version's files over MLflow's REST API, with the standard library alone.

Fetch mode's fast path (:func:`app.model.source.fetch_model`): importing MLflow's client costs
about 0.8 s of a start that otherwise takes 0.5 s, and all it is used for is four kinds of GET.
The endpoints and their JSON are MLflow 3's (``mlflow/server/handlers.py`` and
``mlflow/store/artifact/http_artifact_repo.py`` of the pinned release, checked against a real
``mlflow server`` in the tests):

- ``GET /api/2.0/mlflow/registered-models/alias?name=&alias=`` and
  ``GET /api/2.0/mlflow/model-versions/get?name=&version=``: ``{"model_version": {...}}``;
- ``GET /api/2.0/mlflow/model-versions/get-download-uri?name=&version=``: ``{"artifact_uri"}``;
- ``GET /api/2.0/mlflow/runs/get?run_id=``: ``{"run": {"info": {"artifact_uri"}}}``;
- ``GET /api/2.0/mlflow-artifacts/artifacts?path=<dir>``: ``{"files": [{"path", "is_dir"}]}``
  (names relative to ``<dir>``) and ``GET /api/2.0/mlflow-artifacts/artifacts/<file>``: its bytes,
  for artifact URIs ``mlflow-artifacts:/<path>`` (the server proxies its artifact store).

``file:`` artifact URIs (a server whose store is on this machine) are copied, as MLflow's client
would. Anything else raises :class:`RestUnsupported`, and the caller uses MLflow's client.
Requests carry ``Authorization`` as the client sends it (``MLFLOW_TRACKING_USERNAME`` and
``_PASSWORD``: Basic; else ``MLFLOW_TRACKING_TOKEN``: Bearer) and are bounded like the client's
(``MLFLOW_HTTP_REQUEST_TIMEOUT`` a request, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` retries with
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` back-off, on a refused connection, a timeout, 429 or 5xx).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from purchase_contract.model_dir import ModelReference, ModelSourceError

ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"
# Statuses MLflow's client retries (mlflow/utils/request_utils.py).
RETRIED_STATUSES = (429, 500, 502, 503, 504)
# Settings of MLflow's client that change how it connects: with any of them, the client is used.
CLIENT_ONLY_SETTINGS = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AWS_SIGV4",
)
# At most this many files and directory levels in one artifact tree (a model has about ten).
MAX_FILES = 200
MAX_DEPTH = 8
_CHUNK = 1 << 20


class RestUnsupported(Exception):
    """This fetch needs MLflow's client; the message says why (one log line)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """What fetch mode needs of a model version."""

    name: str
    version: str
    run_id: str | None


@dataclass(frozen=True)
class Artifacts:
    """A directory of artifacts: a local path (``file:``) or a path on the server's proxy."""

    local: Path | None = None
    remote: str | None = None


class RegistryRest:
    """GETs against one MLflow server, bounded, authenticated as MLflow's client does."""

    def __init__(self, tracking_uri: str) -> None:
        scheme = urllib.parse.urlsplit(tracking_uri).scheme
        if scheme not in ("http", "https"):
            raise RestUnsupported(f"the tracking URI is not http(s) ({scheme or 'a path'}://)")
        client_only = [name for name in CLIENT_ONLY_SETTINGS if os.environ.get(name)]
        if client_only:
            raise RestUnsupported(f"{', '.join(client_only)} is set")
        self.base = tracking_uri.rstrip("/")
        self.timeout = _bound("MLFLOW_HTTP_REQUEST_TIMEOUT", "120", float)
        self.retries = int(_bound("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7", int))
        self.backoff = _bound("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2", float)
        self.headers = {"User-Agent": "purchase-predict-api"}
        user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if user and password:
            basic = base64.standard_b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"

    # -- the registry
    def model_version(self, reference: ModelReference) -> RegisteredVersion:
        """The version an alias points at, or the numbered one."""
        if reference.alias is not None:
            query = {"name": reference.name, "alias": reference.alias}
            document = self.get_json("/api/2.0/mlflow/registered-models/alias", query)
        else:
            query = {"name": reference.name, "version": str(reference.version)}
            document = self.get_json("/api/2.0/mlflow/model-versions/get", query)
        version = document.get("model_version")
        if not isinstance(version, dict) or not version.get("version"):
            raise ModelSourceError(f"{self.base} answered no model_version for {query}")
        return RegisteredVersion(
            name=str(version.get("name") or reference.name),
            version=str(version["version"]),
            run_id=version.get("run_id") or None,
        )

    def version_artifacts(self, version: RegisteredVersion) -> Artifacts:
        """Where the version's own files are (no second alias look-up)."""
        query = {"name": version.name, "version": version.version}
        document = self.get_json("/api/2.0/mlflow/model-versions/get-download-uri", query)
        return self.artifacts(str(document.get("artifact_uri") or ""))

    def run_artifacts(self, run_id: str) -> Artifacts | None:
        """Where run ``run_id``'s artifacts are; None when the run is gone."""
        try:
            document = self.get_json("/api/2.0/mlflow/runs/get", {"run_id": run_id})
        except MissingResource:
            return None
        info = (document.get("run") or {}).get("info") or {}
        return self.artifacts(str(info.get("artifact_uri") or ""))

    def artifacts(self, uri: str) -> Artifacts:
        """An artifact URI this module can read; RestUnsupported for the others (gs://...)."""
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme == "mlflow-artifacts" and not parts.netloc:
            return Artifacts(remote=parts.path.strip("/"))
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            return Artifacts(local=Path(urllib.parse.unquote(parts.path)))
        raise RestUnsupported(f"its artifacts are at {parts.scheme or 'a path'}:// ({uri})")

    # -- artifacts
    def list_files(self, where: Artifacts, folder: str = "") -> list[str]:
        """Paths of the files under ``folder`` of ``where``, relative to ``where``, sorted."""
        if where.local is not None:
            root = where.local / folder
            if not root.is_dir():
                return []
            return sorted(
                str(PurePosixPath(*p.relative_to(where.local).parts))
                for p in root.rglob("*")
                if p.is_file()
            )
        return sorted(self._list_remote(str(where.remote), folder, 0))

    def download(self, where: Artifacts, path: str, out_dir: Path) -> Path:
        """The file ``path`` of ``where`` written at ``out_dir/path``."""
        target = out_dir.joinpath(*_safe(path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if where.local is not None:
            shutil.copyfile(where.local.joinpath(*_safe(path).parts), target)
            return target
        route = f"{ARTIFACTS_ROUTE}/{urllib.parse.quote(f'{where.remote}/{path}')}"
        with self._open(route, {}) as response, target.open("wb") as handle:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
        return target

    def _list_remote(self, root: str, folder: str, depth: int) -> list[str]:
        if depth > MAX_DEPTH:
            raise ModelSourceError(f"{root}: artifacts nested deeper than {MAX_DEPTH} levels")
        query = {"path": f"{root}/{folder}".rstrip("/")}
        found: list[str] = []
        for item in self.get_json(ARTIFACTS_ROUTE, query).get("files", []):
            path = str(PurePosixPath(folder, _safe(str(item["path"]))))
            if item.get("is_dir"):
                found.extend(self._list_remote(root, path, depth + 1))
            else:
                found.append(path)
            if len(found) > MAX_FILES:
                raise ModelSourceError(f"{root}: more than {MAX_FILES} artifacts")
        return found

    # -- HTTP
    def get_json(self, route: str, query: dict[str, str]) -> dict[str, Any]:
        """The JSON object a GET answers; ModelSourceError (the server's message) otherwise."""
        with self._open(route, query) as response:
            body = response.read()
        try:
            document = json.loads(body)
        except ValueError:
            raise ModelSourceError(f"{self.base}{route} did not answer JSON") from None
        if not isinstance(document, dict):
            raise ModelSourceError(f"{self.base}{route} did not answer a JSON object")
        return document

    def _open(self, route: str, query: dict[str, str]) -> Any:
        url = f"{self.base}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, headers=self.headers)
        for attempt in range(self.retries + 1):
            if attempt > 1:  # as urllib3's Retry: the first retry at once, then doubling
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 120.0))
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as err:
                if err.code not in RETRIED_STATUSES:
                    raise _server_error(err, url) from None
                last = f"HTTP {err.code} {err.reason}"
            except (urllib.error.URLError, OSError) as err:
                last = str(getattr(err, "reason", err))
        raise ModelSourceError(
            f"{url} did not answer after {self.retries + 1} attempts "
            f"({self.timeout:g} s each at most): {last}"
        )


class MissingResource(ModelSourceError):
    """The server answered RESOURCE_DOES_NOT_EXIST."""


def _server_error(err: urllib.error.HTTPError, url: str) -> ModelSourceError:
    """MLflow's own message when its error body has one (as its client reports it)."""
    try:
        document = json.loads(err.read())
        code, message = document.get("error_code"), document.get("message")
    except (ValueError, AttributeError, OSError):
        code, message = None, None
    # "<error_code>: <message>", as MLflow's client words it (MlflowException.message).
    text = f"{code}: {message}" if code and message else f"HTTP {err.code} {err.reason} from {url}"
    text = " ".join(text.split())
    text = text if len(text) <= 300 else text[:297] + "..."
    if code == "RESOURCE_DOES_NOT_EXIST" or err.code == 404:
        return MissingResource(text)
    return ModelSourceError(text)


def _bound(name: str, default: str, kind: type) -> float:
    """A non-negative number from the environment, as MLflow's client reads it."""
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        raise ModelSourceError(f"{name}={text!r} is not a number") from None
    if value < 0:
        raise ModelSourceError(f"{name}={text!r} is negative")
    return value


def _safe(path: str) -> PurePosixPath:
    """A relative path without ``..``: a listing cannot make the fetch write elsewhere."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ModelSourceError(f"unsafe artifact path {path!r} in the server's listing")
    return pure

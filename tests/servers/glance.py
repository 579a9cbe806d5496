"""A real Glance 33.0.0 (from PyPI) on 127.0.0.1 without Keystone, for end-to-end tests.

``ensure_venv()`` installs ``glance==33.0.0``, gunicorn and this repository (editable, with the
``glance`` extra, so Glance finds our ``glance.image_import.plugins`` and
``oslo.messaging.notify.drivers`` entry points) once into ``<repo>/.servers/`` (git ignored),
and prepares a migrated SQLite template database. ``RealGlance`` runs one keystone-less server
per instance in its own temp dir; ``GlanceClient`` speaks the v2 API with identity headers;
``serve_file`` is a loopback HTTP server for web-download. A server that cannot start raises
RuntimeError (tests fail, never skip). See /work/shared/notes/real-servers.md ("Glance 33.0.0").
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.servers._process import (
    REPO,
    SERVERS_DIR,
    GunicornServer,
    base_python,
    clean_env,
    run,
)
from tests.servers.keystone import ServiceUser

GLANCE_VERSION = "33.0.0"
REQUIREMENTS = (f"glance=={GLANCE_VERSION}", "gunicorn")

PYPROJECT = REPO / "pyproject.toml"
VENV_DIR = SERVERS_DIR / f"glance-{GLANCE_VERSION}"
LOCK_FILE = SERVERS_DIR / "glance.lock"
STAMP_NAME = ".img-crypt-install-complete"
TEMPLATE_DB = "glance-template.sqlite"  # inside the venv: a db_sync'ed empty database

START_TIMEOUT = 60.0

SERVER_PROJECT = "p-fixture"  # the project of the readiness probe's identity headers


# --- the virtualenv ---------------------------------------------------------------------------


def _base_stamp() -> str:
    """The part of the stamp that needs a whole new venv when it changes."""
    return "\n".join((*REQUIREMENTS, base_python())) + "\n"


def _stamp_text() -> str:
    """The complete stamp: a change of pyproject.toml (entry points, extras) reinstalls us."""
    digest = hashlib.sha256(PYPROJECT.read_bytes()).hexdigest()
    return _base_stamp() + f"-e {REPO}[glance]\npyproject.toml sha256 {digest}\n"


def _read_stamp(venv: Path) -> str:
    try:
        return (venv / STAMP_NAME).read_text()
    except OSError:
        return ""


def _venv_complete(venv: Path) -> bool:
    return (
        _read_stamp(venv) == _stamp_text()
        and (venv / "bin" / "python").exists()
        and (venv / "bin" / "gunicorn").exists()
        and (venv / TEMPLATE_DB).exists()
    )


def _pip_install(venv: Path, *args: str) -> None:
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install",
           "--disable-pip-version-check", "--quiet", *args]
    run(cmd, "pip install " + " ".join(args))


def _make_template_db(venv: Path) -> None:
    """``glance-manage db_sync`` once; every server starts from a copy (saves ~1.5 s each)."""
    target = venv / TEMPLATE_DB
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="img-crypt-glance-manage-") as tmp:
        conf = Path(tmp) / "glance-manage.conf"
        conf.write_text(f"[database]\nconnection = sqlite:///{target}\n")
        run([str(venv / "bin" / "glance-manage"), "--config-file", str(conf), "db_sync"],
             "glance-manage db_sync", env=clean_env({"HOME": tmp}))


def _write_stamp(venv: Path, text: str) -> None:
    tmp = venv / (STAMP_NAME + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, venv / STAMP_NAME)


def _install_base(venv: Path) -> None:
    """A fresh venv with Glance and gunicorn; the stamp then records only this part."""
    if venv.exists() or venv.is_symlink():  # a broken or outdated install
        shutil.rmtree(venv)
    run([base_python(), "-m", "venv", str(venv)], "creating the Glance venv")
    _pip_install(venv, *REQUIREMENTS)
    _write_stamp(venv, _base_stamp())


def ensure_venv() -> Path:
    """Return the Glance virtualenv, creating it once (file lock; stamp file written last).

    Only our editable install is redone when just pyproject.toml changed.
    """
    if _venv_complete(VENV_DIR):
        return VENV_DIR
    SERVERS_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _venv_complete(VENV_DIR):  # another process finished it while we waited
                return VENV_DIR
            if not _read_stamp(VENV_DIR).startswith(_base_stamp()):
                _install_base(VENV_DIR)
            _pip_install(VENV_DIR, "-e", f"{REPO}[glance]")
            _make_template_db(VENV_DIR)
            _write_stamp(VENV_DIR, _stamp_text())
            return VENV_DIR
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- configuration ----------------------------------------------------------------------------


def _bracket_list(items: Sequence[str]) -> str:
    """An oslo.config ListOpt value with brackets, e.g. ``['a', 'b']`` (bounded lists need it)."""
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


GLANCE_API_CONF = """\
[DEFAULT]
enabled_backends = fast:file
enabled_import_methods = [glance-direct,web-download,copy-image]
log_file = {log_file}
use_stderr = False

[database]
connection = sqlite:///{sqlite}

[glance_store]
default_backend = fast

[fast]
filesystem_store_datadir = {store_dir}

[os_glance_staging_store]
filesystem_store_datadir = {staging_dir}

[os_glance_tasks_store]
filesystem_store_datadir = {tasks_dir}

[paste_deploy]
flavor =
config_file = {paste}

[oslo_concurrency]
lock_path = {lock_dir}

[import_filtering_opts]
# web-download from the loopback file server: loopback addresses are refused unless the host
# is explicitly allowed; an empty port list means any port (the default is [80, 443]).
allowed_hosts = [127.0.0.1]
allowed_ports = []

[oslo_messaging_notifications]
{drivers}
"""

# Sections copied verbatim from the installed etc/glance/glance-api-paste.ini; our own
# pipeline replaces keystone's authtoken with Glance's ContextMiddleware (identity headers).
PASTE_SECTIONS = (
    "composite:rootapp",
    "app:apiversions",
    "app:apiv2app",
    "filter:http_proxy_to_wsgi",
    "filter:versionnegotiation",
    "filter:context",
)
PASTE_PIPELINE = """\
[pipeline:glance-api]
pipeline = http_proxy_to_wsgi versionnegotiation context {filters}rootapp
"""


def paste_ini(venv: Path, filters: Mapping[str, str] | None = None) -> str:
    """The keystone-less paste file, built from the sections of Glance's installed one.

    ``filters`` (name -> ``paste.filter_factory``) go into the pipeline just before
    ``rootapp``, where an operator puts them after keystone's ``context``.
    """
    filters = dict(filters or {})
    source = venv / "etc" / "glance" / "glance-api-paste.ini"
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    if not parser.read(source):
        raise RuntimeError(f"Glance's paste file is missing: {source}")
    parts = [PASTE_PIPELINE.format(filters="".join(f"{name} " for name in filters))]
    parts += [f"[filter:{name}]\npaste.filter_factory = {factory}\n"
              for name, factory in filters.items()]
    for name in PASTE_SECTIONS:
        if not parser.has_section(name):
            raise RuntimeError(f"{source} has no [{name}] section")
        body = "".join(f"{key} = {value}\n" for key, value in parser.items(name))
        parts.append(f"[{name}]\n{body}")
    return "\n".join(parts)


def keystone_paste_ini(venv: Path, filters: Mapping[str, str] | None = None) -> str:
    """Glance's installed paste file as it is, ``filters`` added after keystone's ``context``.

    That is the edit the README tells operators to make for the upload guard.
    """
    filters = dict(filters or {})
    text = (venv / "etc" / "glance" / "glance-api-paste.ini").read_text()
    if not filters:
        return text
    pipeline = "authtoken context rootapp\n"
    if pipeline not in text:
        raise RuntimeError(f"Glance's keystone pipeline has changed: no {pipeline!r}")
    text = text.replace(pipeline, f"authtoken context {' '.join(filters)} rootapp\n", 1)
    return text + "".join(f"\n[filter:{name}]\npaste.filter_factory = {factory}\n"
                          for name, factory in filters.items())


# keystone mode: Glance's own paste file (flavor keystone: authtoken, then its context) and no
# broker; a driver messagingv2 line (the README keeps it) then goes to the in-memory transport
KEYSTONE_EXTRA = """\
[DEFAULT]
transport_url = fake://

"""


def probe_status(url: str) -> int | None:
    """The HTTP status of ``GET url`` (None when nothing answers)."""
    with requests.Session() as session:
        session.trust_env = False  # loopback only: no proxies from the environment
        try:
            with session.get(url, timeout=2) as resp:
                return resp.status_code
        except requests.RequestException:
            return None


# --- the server -------------------------------------------------------------------------------


class RealGlance(GunicornServer):
    """One real Glance API server (gunicorn, one gthread worker, SQLite) on 127.0.0.1.

    ``plugins`` go to glance-image-import.conf (``[image_import_opts] image_import_plugins``),
    one ``[oslo_messaging_notifications] driver`` line per ``notification_drivers`` entry,
    ``container_formats`` to ``[image_format]``; ``extra_conf`` is appended raw to
    glance-api.conf (read after glance-image-import.conf, so it wins); ``env`` is added to the
    server's cleaned environment; ``paste_filters`` (name -> filter factory) go into the paste
    pipeline before ``rootapp``; ``policy`` (rule name -> check string) becomes
    ``etc/policy.yaml``, Glance's policy file. Image data lands in ``store_dir/<image id>``.
    """

    name = f"Glance {GLANCE_VERSION}"
    ready_path, ready_status = "/v2/images", 200

    def __init__(
        self,
        plugins: Sequence[str] = (),
        notification_drivers: Sequence[str] = ("log",),
        extra_conf: str = "",
        container_formats: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        paste_filters: Mapping[str, str] | None = None,
        policy: Mapping[str, str] | None = None,
        venv: Path | None = None,
        start_timeout: float = START_TIMEOUT,
        keystone: ServiceUser | None = None,
    ) -> None:
        self.keystone = keystone
        self.plugins = list(plugins)
        self.notification_drivers = list(notification_drivers)
        self.extra_conf = extra_conf
        self.container_formats = None if container_formats is None else list(container_formats)
        self.env = dict(env or {})
        self.paste_filters = dict(paste_filters or {})
        self.policy = dict(policy or {})
        super().__init__(venv, start_timeout)

    # paths and addresses

    @property
    def etc_dir(self) -> Path:
        return self._dir() / "etc"

    @property
    def log_file(self) -> Path:
        return self._dir() / "glance-api.log"

    @property
    def staging_dir(self) -> Path:
        return self._dir() / "staging"

    @property
    def store_dir(self) -> Path:
        """The ``fast`` file store: image data lands in ``<store_dir>/<image id>``."""
        return self._dir() / "images" / "fast"

    @property
    def tasks_dir(self) -> Path:
        return self._dir() / "tasks"

    def log_text(self) -> str:
        """The whole Glance log so far (empty when there is none yet)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # configuration

    def api_conf(self) -> str:
        """The text of glance-api.conf (extra_conf appended last, so it can override)."""
        tmp = self._dir()
        text = GLANCE_API_CONF.format(
            log_file=self.log_file, sqlite=tmp / "glance.sqlite", store_dir=self.store_dir,
            staging_dir=self.staging_dir, tasks_dir=self.tasks_dir,
            paste=self.etc_dir / "glance-api-paste.ini", lock_dir=tmp / "locks",
            drivers="".join(f"driver = {d}\n" for d in self.notification_drivers),
        )
        if self.policy:
            text += f"\n[oslo_policy]\npolicy_file = {self.etc_dir / 'policy.yaml'}\n"
        if self.keystone is not None:
            text = text.replace("[paste_deploy]\nflavor =\n", "[paste_deploy]\nflavor = keystone\n")
            text += "\n" + KEYSTONE_EXTRA + self.keystone.authtoken_conf()
        if self.container_formats is not None:
            text += f"\n[image_format]\ncontainer_formats = {','.join(self.container_formats)}\n"
        if self.extra_conf:
            text += "\n" + self.extra_conf.strip("\n") + "\n"
        return text

    def _ensure_venv(self) -> Path:
        return ensure_venv()

    def _prepare(self, venv: Path) -> None:
        tmp = self._dir()
        for path in (self.etc_dir, self.store_dir, self.staging_dir, self.tasks_dir,
                     tmp / "locks", tmp / "home"):
            path.mkdir(parents=True)
        shutil.copyfile(venv / TEMPLATE_DB, tmp / "glance.sqlite")
        (self.etc_dir / "glance-api-paste.ini").write_text(
            paste_ini(venv, self.paste_filters) if self.keystone is None
            else keystone_paste_ini(venv, self.paste_filters))
        if self.policy:
            (self.etc_dir / "policy.yaml").write_text(
                "".join(f"{json.dumps(rule)}: {json.dumps(check)}\n"
                        for rule, check in self.policy.items()))
        (self.etc_dir / "glance-image-import.conf").write_text(
            f"[image_import_opts]\nimage_import_plugins = {_bracket_list(self.plugins)}\n"
        )
        (self.etc_dir / "glance-api.conf").write_text(self.api_conf())

    def _env(self) -> dict[str, str]:
        tmp = self._dir()
        env = clean_env({"HOME": str(tmp / "home"), "OS_GLANCE_CONFIG_DIR": str(self.etc_dir)})
        env.update(self.env)
        return env

    def _ready_headers(self) -> dict[str, str]:
        return identity_headers(SERVER_PROJECT)

    def _ready(self) -> bool:
        if self.keystone is None:
            return super()._ready()
        return probe_status(self.url + self.ready_path) == HTTPStatus.UNAUTHORIZED

    def _app_args(self, venv: Path) -> list[str]:
        return ["-w", "1", "-k", "gthread", "--threads", "4", "--timeout", "120",
                "--graceful-timeout", "5", "glance.wsgi.api:application"]


# --- a small v2 API client --------------------------------------------------------------------


def identity_headers(
    project_id: str, user_id: str = "u-test", roles: str = "admin,member,reader"
) -> dict[str, str]:
    """What keystonemiddleware would add; Glance's ContextMiddleware trusts them as they are."""
    return {
        "X-Identity-Status": "Confirmed",
        "X-Project-Id": project_id,
        "X-User-Id": user_id,
        "X-Roles": roles,
        "X-Auth-Token": "test-token",
    }


class GlanceError(Exception):
    """An unexpected HTTP status from Glance (``status`` and ``body`` kept for asserts)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {body[:2000]}")
        self.status = status
        self.body = body


@dataclass
class ImportResult:
    """The image after its import task finished, and that task (``None`` if not found)."""

    image: dict[str, Any]
    task: dict[str, Any] | None

    @property
    def status(self) -> str:
        """The image status (``active``, ``queued``, ...)."""
        return str(self.image.get("status"))

    @property
    def task_status(self) -> str | None:
        """``success`` or ``failure`` (or ``None``)."""
        return None if self.task is None else self.task.get("status")

    @property
    def task_message(self) -> str:
        """The task's message: empty on success, the error text on failure."""
        return "" if self.task is None else str(self.task.get("message") or "")


ImageData = bytes | str | os.PathLike[str]


class GlanceClient:
    """Glance v2 images API with identity headers instead of a keystone token.

    Use it as a context manager (or call ``close()``) before stopping the server.
    """

    def __init__(
        self, url: str, project_id: str, user_id: str = "u-test",
        roles: str = "admin,member,reader", *, token: str | None = None,
    ) -> None:
        """``token``: a Keystone token (a Glance behind keystonemiddleware), sent alone."""
        self.url = url.rstrip("/")
        self.project_id = project_id
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: no proxies from the environment
        self.session.headers.update(identity_headers(project_id, user_id, roles)
                                    if token is None else {"X-Auth-Token": token})

    def close(self) -> None:
        """Close the HTTP session (open keep-alive connections delay a server's stop by ~2 s)."""
        self.session.close()

    def __enter__(self) -> GlanceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self, method: str, path: str, expect: Sequence[int], **kwargs: Any
    ) -> requests.Response:
        resp = self.session.request(method, self.url + path, timeout=120, **kwargs)
        if resp.status_code not in expect:
            body = "(streamed)" if kwargs.get("stream") else resp.text
            resp.close()
            raise GlanceError(method, path, resp.status_code, body)
        return resp

    def create_image(self, **fields: Any) -> dict[str, Any]:
        """POST /v2/images; extra keyword arguments become image properties."""
        return dict(self._request("POST", "/v2/images", (201,), json=fields).json())

    def get_image(self, image_id: str) -> dict[str, Any] | None:
        """GET /v2/images/{id}; ``None`` when Glance answers 404."""
        resp = self._request("GET", f"/v2/images/{image_id}", (200, 404))
        return dict(resp.json()) if resp.status_code == 200 else None

    def list_images(self) -> list[dict[str, Any]]:
        """All images visible to this project (follows ``next`` links)."""
        images: list[dict[str, Any]] = []
        path: str | None = "/v2/images"
        while path:
            page = self._request("GET", path, (200,)).json()
            images.extend(page["images"])
            path = page.get("next")
        return images

    def delete_image(self, image_id: str) -> None:
        """DELETE /v2/images/{id} (204)."""
        self._request("DELETE", f"/v2/images/{image_id}", (204,))

    def _put_data(self, path: str, data: ImageData) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, bytes):
            self._request("PUT", path, (204,), data=data, headers=headers)
            return
        with open(data, "rb") as stream:  # requests streams a file object, Content-Length set
            self._request("PUT", path, (204,), data=stream, headers=headers)

    def stage(self, image_id: str, data: ImageData) -> None:
        """PUT /v2/images/{id}/stage (interoperable import, step 1); a path is streamed."""
        self._put_data(f"/v2/images/{image_id}/stage", data)

    def upload(self, image_id: str, data: ImageData) -> None:
        """PUT /v2/images/{id}/file (plain upload: import plugins do NOT run)."""
        self._put_data(f"/v2/images/{image_id}/file", data)

    def import_image(
        self, image_id: str, method: str = "glance-direct", uri: str | None = None
    ) -> None:
        """POST /v2/images/{id}/import (202); ``uri`` is required for web-download."""
        body: dict[str, Any] = {"method": {"name": method}}
        if method == "web-download":
            if not uri:
                raise ValueError("web-download needs a uri")
            body["method"]["uri"] = uri
        self._request("POST", f"/v2/images/{image_id}/import", (202,), json=body)

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """GET /v2/tasks/{id} (needs the admin role); ``None`` on 403/404."""
        resp = self._request("GET", f"/v2/tasks/{task_id}", (200, 403, 404))
        return dict(resp.json()) if resp.status_code == 200 else None

    def image_tasks(self, image_id: str) -> list[dict[str, Any]]:
        """GET /v2/images/{id}/tasks: the image's tasks (any role that can see the image)."""
        return list(self._request("GET", f"/v2/images/{image_id}/tasks", (200,)).json()["tasks"])

    def _find_task(self, image_id: str, task_id: str | None) -> dict[str, Any] | None:
        if task_id is not None:
            task = self.get_task(task_id)
            if task is not None:
                return task
        tasks = self.image_tasks(image_id)
        if task_id is not None:
            tasks = [t for t in tasks if t.get("id") == task_id]
        return max(tasks, key=lambda t: str(t.get("created_at")), default=None)

    def wait_import(self, image_id: str, timeout: float = 120) -> ImportResult:
        """Poll until the import task released the image, then return image and task.

        Glance holds the task id in the image property ``os_glance_import_task`` while the
        task runs (it is set before the import call answers 202) and removes it when the task
        ends, on success and on failure. The image can be ``active`` before that, and the task
        can still say ``processing`` a moment after the lock went: that is waited out too.
        """
        deadline = time.monotonic() + timeout
        task_id: str | None = None
        while True:
            image = self.get_image(image_id)
            if image is None:
                raise GlanceError("GET", f"/v2/images/{image_id}", 404, "image disappeared")
            lock = image.get("os_glance_import_task")
            if not lock:
                result = ImportResult(image, self._find_task(image_id, task_id))
                if result.task is None or result.task_status in ("success", "failure") \
                        or time.monotonic() > deadline:
                    return result
            task_id = task_id or (str(lock) if lock else None)
            if time.monotonic() > deadline:
                raise TimeoutError(f"import of {image_id} still running after {timeout} s: {image}")
            time.sleep(0.2)

    def download(self, image_id: str, dest_path: str | os.PathLike[str]) -> int:
        """GET /v2/images/{id}/file streamed into ``dest_path``; returns the byte count."""
        resp = self._request("GET", f"/v2/images/{image_id}/file", (200,), stream=True)
        count = 0
        with resp, open(dest_path, "wb") as out:
            for chunk in resp.iter_content(chunk_size=1 << 20):
                out.write(chunk)
                count += len(chunk)
        return count


# --- a loopback file server for web-download --------------------------------------------------


def _file_handler(path: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        """Serves the one file at any URL path (GET and HEAD)."""

        def _headers(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            self._headers()
            with open(path, "rb") as src:
                shutil.copyfileobj(src, self.wfile, 1 << 20)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    return Handler


@contextlib.contextmanager
def serve_file(path: str | os.PathLike[str]) -> Iterator[str]:
    """Serve ``path`` over HTTP on 127.0.0.1 (free port) in a thread; yields its URL."""
    source = Path(path).resolve()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _file_handler(source))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{source.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


if __name__ == "__main__":  # manual use: python -m tests.servers.glance
    t0 = time.monotonic()
    ensure_venv()
    print(f"venv ready in {time.monotonic() - t0:.1f} s: {VENV_DIR}")
    with RealGlance() as glance_server:
        print(f"{glance_server.url} started in {glance_server.start_seconds:.2f} s "
              f"({glance_server.tmpdir}); Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()

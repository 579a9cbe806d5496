"""A real Keystone 30.0.0 (from PyPI) on 127.0.0.1, for the real-auth end-to-end tests.

``ensure_venv()`` installs ``keystone==30.0.0`` and gunicorn once into ``<repo>/.servers/`` (git
ignored) and keeps a migrated, bootstrapped SQLite template database there (``db_sync`` takes
many seconds; every server starts from a copy). ``RealKeystone`` runs one server per instance
in its own temp dir (fernet tokens, its own key repositories) and :meth:`RealKeystone.admin`
gives a small admin client to create projects, users and catalog entries.

Keystone parses ``sys.argv`` with oslo.config: gunicorn started with command-line options dies,
so the bind address goes into a ``gunicorn.conf.py`` and gunicorn starts with no arguments
from its folder (/work/shared/notes/cloud-use.md section 7).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.servers._process import (
    SERVERS_DIR,
    GunicornServer,
    clean_env,
    install_once,
    run,
)

KEYSTONE_VERSION = "30.0.0"
REQUIREMENTS = (f"keystone=={KEYSTONE_VERSION}", "gunicorn")
VENV_DIR = SERVERS_DIR / f"keystone-{KEYSTONE_VERSION}"
LOCK_FILE = SERVERS_DIR / "keystone.lock"
TEMPLATE_DB = "keystone-template.sqlite"  # inside the venv: db_sync'ed and bootstrapped
TEMPLATE_STAMP = ".img-crypt-template-v1"

ADMIN_PASSWORD = "img-crypt-admin-secret"
START_TIMEOUT = 60.0

KEYSTONE_CONF = """\
[DEFAULT]
log_file = {log_file}
use_stderr = False

[database]
connection = sqlite:///{sqlite}

[token]
provider = fernet

[fernet_tokens]
key_repository = {keys}/fernet

[fernet_receipts]
key_repository = {keys}/receipts

[credential]
key_repository = {keys}/credential

[identity]
# test speed only: bcrypt's default 12 rounds cost about 0.25 s per password check
password_hash_rounds = 4
"""

GUNICORN_CONF = """\
wsgi_app = "keystone.wsgi.api:application"
bind = "127.0.0.1:{port}"
workers = 1
worker_class = "gthread"
threads = 4
timeout = 120
graceful_timeout = 5
"""


def _manage(venv: Path, conf: Path, home: Path, *args: str) -> None:
    run([str(venv / "bin" / "keystone-manage"), "--config-file", str(conf), *args],
        "keystone-manage " + args[0], env=clean_env({"HOME": str(home)}))


def _key_repository(directory: Path) -> None:
    """What ``keystone-manage fernet_setup`` writes, without its 20 s of Python start-up:
    key 0 (staged) and key 1 (primary), each a urlsafe base64 Fernet key, mode 0600."""
    directory.mkdir(parents=True, mode=0o700)
    for index in ("0", "1"):
        path = directory / index
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(base64.urlsafe_b64encode(os.urandom(32)))


def _write_conf(directory: Path, sqlite: Path) -> Path:
    conf = directory / "keystone.conf"
    conf.write_text(KEYSTONE_CONF.format(log_file=directory / "keystone.log", sqlite=sqlite,
                                         keys=directory / "keys"))
    return conf


def _make_template_db(venv: Path) -> None:
    """``db_sync`` and ``bootstrap`` once (admin user and project, roles, RegionOne)."""
    target = venv / TEMPLATE_DB
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="img-crypt-keystone-manage-") as tmp:
        work = Path(tmp)
        partial = work / "template.sqlite"
        conf = _write_conf(work, partial)
        for repository in ("fernet", "receipts", "credential"):
            _key_repository(work / "keys" / repository)
        _manage(venv, conf, work, "db_sync")
        _manage(venv, conf, work, "bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                "--bootstrap-region-id", "RegionOne")
        shutil.copyfile(partial, target)
    (venv / TEMPLATE_STAMP).write_text(KEYSTONE_VERSION + "\n")


def ensure_venv() -> Path:
    """Return the Keystone virtualenv with its template database, creating both once."""
    venv = install_once(VENV_DIR, LOCK_FILE, REQUIREMENTS, "Keystone")
    if (venv / TEMPLATE_STAMP).exists() and (venv / TEMPLATE_DB).exists():
        return venv
    with open(LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (venv / TEMPLATE_STAMP).exists() or not (venv / TEMPLATE_DB).exists():
                _make_template_db(venv)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return venv


class RealKeystone(GunicornServer):
    """One real Keystone (gunicorn, one gthread worker, SQLite, fernet) on 127.0.0.1."""

    name = f"Keystone {KEYSTONE_VERSION}"
    ready_path, ready_status = "/v3", 200

    def __init__(self, venv: Path | None = None, start_timeout: float = START_TIMEOUT) -> None:
        super().__init__(venv, start_timeout)

    @property
    def log_file(self) -> Path:
        return self._dir() / "keystone.log"

    @property
    def auth_url(self) -> str:
        """The identity v3 URL (``auth_url`` / ``www_authenticate_uri``)."""
        return f"{self.url}/v3"

    def _ensure_venv(self) -> Path:
        return ensure_venv()

    def _prepare(self, venv: Path) -> None:
        tmp = self._dir()
        (tmp / "home").mkdir()
        shutil.copyfile(venv / TEMPLATE_DB, tmp / "keystone.sqlite")
        _write_conf(tmp, tmp / "keystone.sqlite")
        for repository in ("fernet", "receipts", "credential"):
            _key_repository(tmp / "keys" / repository)

    def _command(self, venv: Path, port: int) -> list[str]:
        (self._dir() / "gunicorn.conf.py").write_text(GUNICORN_CONF.format(port=port))
        return [str(venv / "bin" / "gunicorn")]  # no arguments: Keystone parses argv

    def _app_args(self, venv: Path) -> list[str]:
        return []

    def _env(self) -> dict[str, str]:
        tmp = self._dir()
        return clean_env({"HOME": str(tmp / "home"),
                          "OS_KEYSTONE_CONFIG_FILES": str(tmp / "keystone.conf")})

    def admin(self) -> KeystoneAdmin:
        """A client with a token of the bootstrap ``admin`` (project ``admin``)."""
        return KeystoneAdmin(self.auth_url, "admin", ADMIN_PASSWORD, "admin")


@dataclass(frozen=True)
class ServiceUser:
    """A service's Keystone user (project ``service``, Default domain) for keystonemiddleware."""

    auth_url: str
    name: str
    password: str
    project: str = "service"

    def authtoken_conf(self) -> str:
        """The ``[keystone_authtoken]`` section of a service behind keystonemiddleware."""
        return (f"[keystone_authtoken]\nwww_authenticate_uri = {self.auth_url}\n"
                f"auth_url = {self.auth_url}\nauth_type = password\n"
                f"username = {self.name}\npassword = {self.password}\n"
                f"project_name = {self.project}\nuser_domain_name = Default\n"
                f"project_domain_name = Default\n")


def _post(url: str, body: dict[str, Any], token: str | None = None) -> requests.Response:
    """POST JSON on loopback (no proxies from the environment)."""
    with requests.Session() as session:
        session.trust_env = False
        headers = {} if token is None else {"X-Auth-Token": token}
        return session.post(url, json=body, headers=headers, timeout=30)


def password_token(auth_url: str, user: str, password: str, project: str) -> tuple[str, Any]:
    """A project-scoped token for a Default-domain user: (token, the token's JSON body)."""
    body: dict[str, Any] = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    resp = _post(f"{auth_url}/auth/tokens", body)
    resp.raise_for_status()
    return resp.headers["X-Subject-Token"], resp.json()


class KeystoneAdmin:
    """The few identity API calls the fixtures need, as a project-scoped admin."""

    def __init__(self, auth_url: str, user: str, password: str, project: str) -> None:
        self.auth_url = auth_url
        self.token, _ = password_token(auth_url, user, password, project)
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["X-Auth-Token"] = self.token

    def _post(self, path: str, key: str, body: dict[str, Any]) -> str:
        resp = self.session.post(f"{self.auth_url}{path}", json={key: body}, timeout=30)
        if resp.status_code != 201:
            raise RuntimeError(f"POST {path} answered {resp.status_code}: {resp.text[:500]}")
        return str(resp.json()[key]["id"])

    def role_id(self, name: str) -> str:
        """The id of role ``name`` (bootstrap made admin, manager, member, reader, service)."""
        resp = self.session.get(f"{self.auth_url}/roles", params={"name": name}, timeout=30)
        resp.raise_for_status()
        return str(resp.json()["roles"][0]["id"])

    def project(self, name: str) -> str:
        """Create project ``name`` in the Default domain; its id."""
        return self._post("/projects", "project", {"name": name, "domain_id": "default"})

    def user(self, name: str, password: str, project_id: str, roles: tuple[str, ...]) -> str:
        """Create a user with ``roles`` on ``project_id``; its id."""
        user_id = self._post("/users", "user", {"name": name, "password": password,
                                                "domain_id": "default",
                                                "default_project_id": project_id})
        for role in roles:
            resp = self.session.put(f"{self.auth_url}/projects/{project_id}/users/{user_id}"
                                    f"/roles/{self.role_id(role)}", timeout=30)
            if resp.status_code != 204:
                raise RuntimeError(f"role {role} for {name}: {resp.status_code} {resp.text}")
        return user_id

    def endpoint(self, service_type: str, name: str, url: str) -> None:
        """A service and its public and internal endpoints in RegionOne."""
        service_id = self._post("/services", "service", {"type": service_type, "name": name})
        for interface in ("public", "internal"):
            self._post("/endpoints", "endpoint", {"service_id": service_id, "url": url,
                                                  "interface": interface,
                                                  "region_id": "RegionOne"})

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


def app_credential(auth_url: str, user_id: str, user_token: str, name: str) -> tuple[str, str]:
    """Create an application credential of the token's user: (id, secret)."""
    resp = _post(f"{auth_url}/users/{user_id}/application_credentials",
                 {"application_credential": {"name": name}}, user_token)
    if resp.status_code != 201:
        raise RuntimeError(f"application credential: {resp.status_code} {resp.text[:500]}")
    cred = resp.json()["application_credential"]
    return str(cred["id"]), str(cred["secret"])


def app_credential_token(auth_url: str, cred_id: str, secret: str) -> str:
    """A token from an application credential (scoped to its project by Keystone)."""
    body: dict[str, Any] = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred_id, "secret": secret}}}}
    resp = _post(f"{auth_url}/auth/tokens", body)
    resp.raise_for_status()
    return resp.headers["X-Subject-Token"]


if __name__ == "__main__":  # manual use: python -m tests.servers.keystone
    t0 = time.monotonic()
    ensure_venv()
    print(f"venv ready in {time.monotonic() - t0:.1f} s: {VENV_DIR}")
    with RealKeystone() as server:
        print(f"{server.url} started in {server.start_seconds:.2f} s; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()

"""A small real cloud on 127.0.0.1: Keystone 30, Barbican 23 and Glance 33 with the plugin.

:func:`start_cloud` starts Keystone, creates the identities, starts Barbican behind
keystonemiddleware with its shipped default policies (secure RBAC, scope enforced: no
``enforce_new_defaults = False``, no policy file) and Glance (flavor ``keystone``) whose
plugin configuration is README.md's Glance block with this cloud's addresses
(:mod:`tests.support.readme_conf`).

Identities (Default domain): projects ``img-crypt-a`` and ``img-crypt-b`` with a ``member``
user each (``alice``, ``bob``); ``service`` with ``glance`` and ``barbican`` (role
``service``, what keystonemiddleware needs to validate tokens); an application credential of
alice's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

from tests.servers.barbican import RealBarbican
from tests.servers.glance import RealGlance
from tests.servers.keystone import (
    ADMIN_PASSWORD,
    KeystoneAdmin,
    RealKeystone,
    ServiceUser,
    app_credential,
    app_credential_token,
    password_token,
)
from tests.support.readme_conf import glance_block, inline_comments, operator_conf

SERVICE_PROJECT = "service"
GLANCE_ROLES = ("service",)
"""The Glance service user's roles: what the README tells operators."""


@functools.cache
def _cached_token(auth_url: str, name: str, password: str, project: str) -> str:
    return password_token(auth_url, name, password, project)[0]


@dataclass(frozen=True)
class Member:
    """A Keystone user (Default domain) and the project its tokens are scoped to."""

    auth_url: str
    name: str
    password: str
    project: str
    project_id: str
    user_id: str

    def token(self) -> str:
        """A project-scoped token (password authentication), one per user and session: each
        new token costs a validation at Keystone in every service it reaches."""
        return _cached_token(self.auth_url, self.name, self.password, self.project)


@dataclass(frozen=True)
class AppCredential:
    """An application credential of a :class:`Member` (same project)."""

    auth_url: str
    id: str
    secret: str
    owner: Member

    def token(self) -> str:
        """A fresh token from the application credential."""
        return app_credential_token(self.auth_url, self.id, self.secret)


@dataclass
class Cloud:
    """The running servers and the identities."""

    keystone: RealKeystone
    barbican: RealBarbican
    glance: RealGlance
    a: Member
    b: Member
    app_a: AppCredential
    admin: Member
    """Keystone's bootstrap ``admin`` (role admin on project ``admin``): a cloud admin."""
    glance_user: ServiceUser
    glance_admin: ServiceUser
    """A Glance user with role ``admin`` too: what an operator might try (it does not help)."""
    glance_conf: str
    """The plugin part of glance-api.conf: the README block with this cloud's values."""


def _member(admin: KeystoneAdmin, project: str, name: str) -> Member:
    project_id = admin.project(project)
    password = f"{name}-secret"
    user_id = admin.user(name, password, project_id, ("member",))
    return Member(admin.auth_url, name, password, project, project_id, user_id)


def _bootstrap_admin(auth_url: str) -> Member:
    body = password_token(auth_url, "admin", ADMIN_PASSWORD, "admin")[1]["token"]
    return Member(auth_url, "admin", ADMIN_PASSWORD, "admin", body["project"]["id"],
                  body["user"]["id"])


def _service_user(admin: KeystoneAdmin, service_project: str, name: str,
                  roles: tuple[str, ...]) -> ServiceUser:
    password = f"{name}-service-secret"
    admin.user(name, password, service_project, roles)
    return ServiceUser(admin.auth_url, name, password, SERVICE_PROJECT)


@contextlib.contextmanager
def start_cloud() -> Iterator[Cloud]:
    """Start the whole cloud; stop every server it started (by pid) on exit."""
    block = glance_block()
    bad = inline_comments(block)
    if bad:
        raise RuntimeError(f"README.md's Glance block does not paste as it is (inline "
                           f"comments): {bad}")
    with contextlib.ExitStack() as stack:
        keystone = stack.enter_context(RealKeystone())
        admin = keystone.admin()
        stack.callback(admin.close)
        admin.endpoint("identity", "keystone", keystone.auth_url)
        service_project = admin.project(SERVICE_PROJECT)
        a = _member(admin, "img-crypt-a", "alice")
        b = _member(admin, "img-crypt-b", "bob")
        glance_user = _service_user(admin, service_project, "glance", GLANCE_ROLES)
        glance_admin = _service_user(admin, service_project, "glance-admin",
                                     (*GLANCE_ROLES, "admin"))
        barbican_user = _service_user(admin, service_project, "barbican", ("service",))
        cred_id, secret = app_credential(keystone.auth_url, a.user_id, a.token(), "img-crypt")
        barbican = stack.enter_context(RealBarbican(keystone=barbican_user))
        admin.endpoint("key-manager", "barbican", barbican.url)
        conf = operator_conf(block, barbican_url=barbican.url,
                             keystone_url=keystone.auth_url,
                             glance_password=glance_user.password)
        glance = stack.enter_context(RealGlance(notification_drivers=(), extra_conf=conf,
                                                   keystone=glance_user))
        # the catalog names Glance: reconcile, img-crypt download and openstacksdk find it there
        admin.endpoint("image", "glance", glance.url)
        yield Cloud(keystone, barbican, glance, a, b,
                    AppCredential(keystone.auth_url, cred_id, secret, a),
                    _bootstrap_admin(keystone.auth_url), glance_user, glance_admin, conf)

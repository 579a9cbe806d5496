"""A faithful stand-in for Glance 33's import action wrapper, and the plugin's configuration.

``FakeActionWrapper`` reproduces glance.async_.flows.api_image_import.ImportActionWrapper and
_ImportActions (glance 33.0.0): each ``with`` fetches a fresh copy of the image, checks the
import task lock, and saves only when the block exits without an exception; only five image
attributes may be set, and ``os_glance*`` extra properties are dropped.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castellan import key_manager as castellan_key_manager
from oslo_config import cfg

from img_crypt.glance import opts, plugin
from img_crypt.keys.base import KeyManager

GLANCE_CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
RESERVED = "os_glance"
STORES = ["fast"]


class TaskAbortedError(Exception):
    """glance.common.exception.TaskAbortedError."""


@dataclass
class FakeImage:
    """The fields of glance.domain.Image the import actions touch."""

    image_id: str
    status: str = "importing"
    container_format: str | None = "bare"
    disk_format: str | None = "raw"
    size: int | None = None
    virtual_size: int | None = None
    extra_properties: dict[str, Any] = field(default_factory=dict)
    locations: list[dict[str, Any]] = field(default_factory=list)


class FakeImageRepo:
    """An image repository: ``get`` hands out a copy, ``save`` stores one (like the DB)."""

    def __init__(self, image: FakeImage) -> None:
        self._image = copy.deepcopy(image)
        self.saves = 0

    def get(self, image_id: str) -> FakeImage:
        assert image_id == self._image.image_id
        return copy.deepcopy(self._image)

    def save(self, image: FakeImage, from_state: str | None = None) -> None:
        self._image = copy.deepcopy(image)
        self.saves += 1

    @property
    def image(self) -> FakeImage:
        """The stored image (a copy)."""
        return copy.deepcopy(self._image)


class FakeImportActions:
    """glance.async_.flows.api_image_import._ImportActions."""

    IMPORTING_STORES_KEY = "os_glance_importing_to_stores"
    IMPORT_FAILED_KEY = "os_glance_failed_import"

    def __init__(self, image: FakeImage) -> None:
        self._image = image

    @property
    def image_id(self) -> str:
        return self._image.image_id

    @property
    def image_size(self) -> int | None:
        return self._image.size

    @property
    def image_locations(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._image.locations)

    @property
    def image_disk_format(self) -> str | None:
        return self._image.disk_format

    @property
    def image_container_format(self) -> str | None:
        return self._image.container_format

    @property
    def image_extra_properties(self) -> dict[str, Any]:
        return dict(self._image.extra_properties)

    @property
    def image_status(self) -> str:
        return self._image.status

    def merge_store_list(self, list_key: str, stores: list[str], subtract: bool = False) -> None:
        wanted = {store for store in stores if store}
        existing = set(self._image.extra_properties.get(list_key, "").split(","))
        merged = existing - wanted if subtract else existing | wanted
        self._image.extra_properties[list_key] = ",".join(sorted(s for s in merged if s))

    def add_importing_stores(self, stores: list[str]) -> None:
        self.merge_store_list(self.IMPORTING_STORES_KEY, stores)

    def remove_importing_stores(self, stores: list[str]) -> None:
        self.merge_store_list(self.IMPORTING_STORES_KEY, stores, subtract=True)

    def add_failed_stores(self, stores: list[str]) -> None:
        self.merge_store_list(self.IMPORT_FAILED_KEY, stores)

    def remove_failed_stores(self, stores: list[str]) -> None:
        self.merge_store_list(self.IMPORT_FAILED_KEY, stores, subtract=True)

    def set_image_attribute(self, **attrs: Any) -> None:
        allowed = ["status", "disk_format", "container_format", "virtual_size", "size"]
        for attr, value in attrs.items():
            if attr not in allowed:
                raise AttributeError(f"Setting {attr} is not allowed")
            setattr(self._image, attr, value)

    def set_image_extra_properties(self, properties: dict[str, Any]) -> None:
        for key, value in properties.items():
            if not key.startswith(RESERVED):  # Glance drops (and logs) reserved keys
                self._image.extra_properties[key] = value

    def pop_extra_property(self, name: str) -> None:
        self._image.extra_properties.pop(name, None)


class FakeActionWrapper:
    """glance.async_.flows.api_image_import.ImportActionWrapper over a FakeImageRepo."""

    def __init__(self, image_repo: FakeImageRepo, image_id: str, task_id: str) -> None:
        self._image_repo = image_repo
        self._image_id = image_id
        self._task_id = task_id
        self._image: FakeImage | None = None
        self._previous_status: str | None = None

    def __enter__(self) -> FakeImportActions:
        self._image = self._image_repo.get(self._image_id)
        self._previous_status = self._image.status
        self._assert_task_lock(self._image)
        return FakeImportActions(self._image)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            return  # Glance does not save an image changed in a failed block
        self.assert_task_lock()
        assert self._image is not None
        self._image_repo.save(self._image, self._previous_status)

    @property
    def image_id(self) -> str:
        return self._image_id

    def _assert_task_lock(self, image: FakeImage) -> None:
        if image.extra_properties.get("os_glance_import_task") != self._task_id:
            raise TaskAbortedError()

    def assert_task_lock(self) -> None:
        self._assert_task_lock(self._image_repo.get(self._image_id))


# --- fixtures ---------------------------------------------------------------------------------


def register_glance_image_format(conf: cfg.ConfigOpts) -> None:
    """Glance 33's ``[image_format]`` options the plugin reads, with Glance's defaults
    (glance/common/config.py), and ``encrypted`` added to the container formats."""
    conf.register_opts([
        cfg.ListOpt("container_formats", default=[*GLANCE_CONTAINER_FORMATS, "encrypted"]),
        cfg.BoolOpt("require_image_format_match", default=True),
        cfg.ListOpt("gpt_safety_checks_nonfatal", default=[]),
    ], group="image_format")


def make_conf(**overrides: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    register_glance_image_format(conf)
    opts.register_opts(conf)
    conf([])
    for name, value in overrides.items():
        conf.set_override(name, value, group="image_encryption")
    return conf


def glance_conf(barbican_url: str | None = None, **overrides: Any) -> cfg.ConfigOpts:
    """A Glance-like configuration: our options, castellan's, [barbican] barbican_endpoint."""
    conf = cfg.ConfigOpts()
    register_glance_image_format(conf)
    opts.register_opts(conf)
    conf([])
    castellan_key_manager.API(conf)  # registers [key_manager] and [barbican]
    if barbican_url is not None:
        conf.set_override("barbican_endpoint", barbican_url, group="barbican")
    for name, value in overrides.items():
        conf.set_override(name, value, group=opts.GROUP)
    return conf


class Import:
    """One image being imported: its staging file, its repo, and the plugin task."""

    def __init__(self, tmp_path: Path, data: bytes, conf: cfg.ConfigOpts,
                 key_manager: Callable[[cfg.ConfigOpts, Any], KeyManager], *,
                 image_id: str | None = None, container_format: str = "bare",
                 disk_format: str | None = "raw", extra: dict[str, Any] | None = None) -> None:
        self.image_id = image_id or str(uuid.uuid4())
        self.task_id = str(uuid.uuid4())
        self.staging = tmp_path / "staging"
        self.staging.mkdir(exist_ok=True)
        self.staged = self.staging / self.image_id
        self.staged.write_bytes(data)
        self.file_path = f"file://{self.staged}"
        self.repo = FakeImageRepo(FakeImage(
            self.image_id, container_format=container_format, disk_format=disk_format,
            size=len(data),
            extra_properties={"os_glance_import_task": self.task_id,
                              "os_glance_importing_to_stores": ",".join(STORES),
                              **(extra or {})}))
        self.initial = self.repo.image
        self.wrapper = FakeActionWrapper(self.repo, self.image_id, self.task_id)
        self.task = plugin.EncryptImage(
            context=None, task_id=self.task_id, task_type="api_image_import",
            action_wrapper=self.wrapper, stores=list(STORES), conf=conf,
            key_manager=key_manager)

    def run(self) -> str:
        result: str = self.task.execute(file_path=self.file_path)
        return result

    @property
    def image(self) -> FakeImage:
        return self.repo.image

    @property
    def unchanged(self) -> bool:
        """True while the stored image is as it was before the plugin ran."""
        return self.repo.image == self.initial

    @property
    def encrypted(self) -> Path:
        return self.staging / f"{self.image_id}.img-crypt"

    @property
    def luks(self) -> Path:
        """Where format = luks writes the container."""
        return self.staging / f"{self.image_id}.luks"

    def staging_files(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir())


def using(manager: KeyManager) -> Callable[[cfg.ConfigOpts, Any], KeyManager]:
    return lambda conf, ctx: manager


def never(conf: cfg.ConfigOpts, ctx: Any) -> KeyManager:
    raise AssertionError("the key manager must not be used here")

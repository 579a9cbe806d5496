"""The Glance image-import plugin ``image_encryption``: encrypt staged data before it is stored.

Enabled with ``[image_import_opts] image_import_plugins = ['image_encryption']``. It runs for
glance-direct, web-download and glance-download imports, after the data is staged and before
it goes to the stores. Per image: apply Glance's own format checks to the plaintext
(:mod:`inspection`: Glance cannot inspect ciphertext), fetch or create the KEK, register the
image as its consumer, encrypt the staged file into a new one (img-crypt-v1 bound to the
image id, or a raw LUKS1 container with ``format = luks``: :mod:`luks_output`), and set the
``os_encrypt_*`` properties and ``virtual_size``. Any failure is undone (key, consumer,
files, image status), see :meth:`revert`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oslo_config import cfg
from taskflow import task
from taskflow.patterns import linear_flow

from img_crypt import luks
from img_crypt.enrollment import Enrollment, NewKey
from img_crypt.envelope import Kek
from img_crypt.errors import ImgCryptError, UnsafeImageError, UsageError
from img_crypt.glance import claims, inspection, luks_output, recent, staged
from img_crypt.glance import properties as props
from img_crypt.glance.keys import for_request
from img_crypt.glance.opts import GROUP, register_opts
from img_crypt.keys.base import Consumer
from img_crypt.keys.naming import per_image_key_name

STEPS = ("inspect", "manager", "key", "get", "consumer", "encrypt", "wait", "publish",
         "unlink", "total")
"""The import's timed steps, in the order its DEBUG line gives them. Key, get and consumer run
in one thread while encrypt runs in another (``wait``: the part of encrypt spent waiting for
the key), so their finishing order varies; ``total`` is the whole task, from its start."""

PLACEHOLDER_KEY_ID = str(uuid.UUID(int=0))
"""Sizes the header of a key not made yet: Barbican's secret ids, like the local store's, are
UUIDs (another length costs a second encryption, see :func:`staged.encrypt_file`)."""

LOG = logging.getLogger("img_crypt.glance.plugin")


def _raise_if_failed(keyed: Future[tuple[str, bytes]]) -> None:
    """Stop the encryption early when making the key already failed."""
    if keyed.done() and (error := keyed.exception()) is not None:
        raise error


@contextlib.contextmanager
def _cancel_on_error(pending: Future[None]) -> Iterator[None]:
    """Drop ``pending`` if it has not started when the block fails (nothing to register)."""
    try:
        yield
    except BaseException:
        pending.cancel()
        raise


def _upload_error(message: str) -> Exception:
    """Glance's UploadException: the one whose text becomes the task's message."""
    try:
        from glance.common.exception import UploadException
    except ImportError:  # outside Glance (unit tests)
        return RuntimeError(message)
    return UploadException(message)  # type: ignore[no-any-return]


@dataclass
class _Done:
    """What execute changed, so revert undoes exactly that."""

    enrollment: Enrollment | None = None
    dest: Path | None = None
    properties: list[str] = field(default_factory=list)
    attributes: dict[str, str | None] = field(default_factory=dict)  # the values before
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the DEBUG log
    noted: tuple[str, Consumer] | None = None  # the record noted in :mod:`.recent`
    started: float = 0.0  # perf_counter() when execute began

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of the block to ``seconds[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start


class EncryptImage(task.Task):  # type: ignore[misc]
    """Encrypt the staged image data; provides the new ``file_path``."""

    default_provides = "file_path"

    def __init__(self, *, context: Any, task_id: str, task_type: str, action_wrapper: Any,
                 stores: list[str], conf: cfg.ConfigOpts, key_manager: Any = for_request):
        super().__init__(name=f"{task_type}-EncryptImage-{task_id}")
        self.context, self.action_wrapper, self.stores = context, action_wrapper, stores
        self.conf, self.key_manager = conf, key_manager
        self.image_id = str(action_wrapper.image_id)
        self.src: Path | None = None
        self.done = _Done()

    # --- execute -------------------------------------------------------------------------

    def execute(self, file_path: str) -> str:
        """Encrypt ``file_path`` (``file://`` staging URI); return the encrypted file's URI."""
        self.done.started = time.perf_counter()
        with self.action_wrapper as action:
            extra = dict(action.image_extra_properties)
            container_format = action.image_container_format
            disk_format = action.image_disk_format
        self.src = staged.path_of(file_path)
        if props.is_encrypted(extra):
            return self._accept_client_side(file_path, extra)
        stray = props.stray_encryption_properties(extra)
        if stray:  # encrypted or not? Neither guess is safe: the user must say
            raise _upload_error(f"image {self.image_id} has {', '.join(stray)} but no "
                                f"{props.FORMAT}: set it if the data is already encrypted, "
                                f"or remove them")
        with self.done.timed("inspect"):  # before any key or consumer
            verdict = self._inspect(container_format, disk_format)
        try:
            return self._encrypt(container_format, disk_format, verdict.virtual_size)
        except ImgCryptError as e:
            self._undo_keys_and_files()
            message = f"image {self.image_id} could not be encrypted: {e}"
            if self.conf[GROUP].require_encryption:
                raise _upload_error(message) from None
            LOG.warning("%s; storing it in plaintext (require_encryption = False)", message)
            return file_path
        except BaseException:
            self._undo_keys_and_files()  # revert may never come: leave no key or consumer
            raise

    def _accept_client_side(self, file_path: str, extra: dict[str, Any]) -> str:
        """An image encrypted before upload: store it as it is, once its claim is backed.

        With ``require_encryption`` the claim is checked as on ``PUT /file``
        (:mod:`.claims`: an accepted format, and data that backs it, with the importing
        user's keys); ours is also checked whole (structure, binding to this image).
        """
        assert self.src is not None
        claimed = extra.get(props.FORMAT)
        if self.conf[GROUP].require_encryption:
            refusal = claims.property_refusal(self.image_id, extra,
                                              self.conf[GROUP].accepted_formats)
            if refusal is None:
                with open(self.src, "rb") as file:
                    head = file.read(claims.HEAD_SIZE)
                refusal = claims.data_refusal(self.image_id, extra, head,
                                              self.key_manager(self.conf, self.context))
            if refusal is not None:
                raise _upload_error(refusal)
        if claimed != props.FORMAT_NAME:
            LOG.info("image %s is already encrypted (%s); left as it is", self.image_id,
                     claimed)
            return file_path
        try:
            staged.check_client_encrypted(self.src, uuid.UUID(self.image_id))
        except ImgCryptError as e:
            raise _upload_error(f"image {self.image_id} claims os_encrypt_format "
                                f"{props.FORMAT_NAME} but its data does not match: {e}") from None
        LOG.info("image %s was encrypted by the client; left as it is", self.image_id)
        return file_path

    def _inspect(self, container_format: str | None, disk_format: str | None
                 ) -> inspection.Verdict:
        """Glance's own format checks, on the plaintext (never downgraded to a warning)."""
        assert self.src is not None
        try:
            return inspection.check(self.src, container_format, disk_format, self.conf)
        except UnsafeImageError as e:
            LOG.warning("image %s refused by Glance's format checks: %s", self.image_id, e)
            raise _upload_error(str(e)) from None

    def _policy(self) -> props.Policy:
        group = self.conf[GROUP]
        if group.key_deletion_policy:
            return props.deletion_policy({props.DELETION_POLICY: group.key_deletion_policy})
        return props.DO_NOT_DELETE if group.kek_id else props.ON_IMAGE_DELETION

    def _check_output(self, disk_format: str | None) -> None:
        """Refuse, before any key exists, what the configured format cannot write."""
        group = self.conf[GROUP]
        if group.format == "luks":
            assert self.src is not None
            luks_output.check_input(self.src, disk_format, group.luks_max_virtual_size)
        elif group.container_format == "bare" or group.container_format not in \
                self.conf.image_format.container_formats:
            raise UsageError(f"[{GROUP}] container_format {group.container_format!r} must "
                                  f"be one of [image_format] container_formats, and not 'bare'")

    def _encrypt(self, container_format: str | None, disk_format: str | None,
                 virtual_size: int | None) -> str:
        group, done = self.conf[GROUP], self.done
        assert self.src is not None
        self._check_output(disk_format)
        policy = self._policy()
        consumer = Consumer(service=group.consumer_service, resource_type="image",
                            resource_id=self.image_id)  # checked before anything is created
        with done.timed("manager"):
            manager = self.key_manager(self.conf, self.context)
        done.enrollment = enrolled = Enrollment(manager)
        ref = group.kek_id or NewKey(per_image_key_name(
            self.image_id, delete_with_image=policy == props.ON_IMAGE_DELETION))
        sized: dict[str, int] = {}
        # The key is made, fetched and the image registered as its consumer (one thread, in
        # that order) while the data is encrypted; nothing is published before all of it
        # ended, and a failure of any is undone after all ended (execute).
        with ThreadPoolExecutor(1, thread_name_prefix="img-crypt-key") as pool:
            keyed = pool.submit(self._make_key, enrolled, ref)
            registered = pool.submit(self._register, enrolled, consumer, keyed)
            with done.timed("encrypt"), _cancel_on_error(registered):
                if group.format == "luks":
                    key_id, key = self._wait(keyed)  # the passphrase comes first
                    result = luks_output.encrypt_file(self.src, disk_format,
                                                      luks.passphrase(key, key_id))
                    done.dest, sizes = result.path, (result.plaintext_size, result.file_size)
                    new = props.luks_properties(key_id=key_id, policy=policy,
                                                plaintext_size=result.plaintext_size)
                    attributes = {"container_format": "bare", "disk_format": "raw"}
                else:
                    foreseen = group.kek_id or PLACEHOLDER_KEY_ID

                    def kek() -> Kek:
                        return Kek(manager.kind, *self._wait(keyed))

                    done.dest, summary = staged.encrypt_file(
                        self.src, uuid.UUID(self.image_id), (manager.kind, foreseen), kek,
                        check=lambda: _raise_if_failed(keyed))
                    key_id = summary.header.slots[0].key_id
                    sizes = (summary.plaintext_size, summary.file_size)
                    new = props.encrypted_properties(
                        header_size=summary.header_size, key_id=key_id, policy=policy,
                        plaintext_size=summary.plaintext_size,
                        container_format=container_format or "bare")
                    attributes = {"container_format": group.container_format}
                    if virtual_size is not None:  # Glance cannot inspect ciphertext: say it
                        sized["virtual_size"] = virtual_size
        registered.result()  # the registration's own error, once the encryption succeeded
        with done.timed("publish"), self.action_wrapper as action:
            before = {"container_format": container_format, "disk_format": disk_format,
                      "virtual_size": None}
            done.attributes = {name: before[name] for name in [*attributes, *sized]}
            action.set_image_attribute(size=sizes[1], **attributes, **sized)
            done.properties = list(new)
            action.set_image_extra_properties(new)
        with done.timed("unlink"):
            self.src.unlink()  # no plaintext stays in staging
        done.noted = (key_id, consumer)
        recent.note(key_id, consumer)  # Glance's upload events follow: no need to ask Barbican
        LOG.info("image %s encrypted (%s) with key %s: %d -> %d bytes", self.image_id,
                 group.format, key_id, *sizes)
        done.seconds["total"] = time.perf_counter() - done.started
        LOG.debug("image %s: %s", self.image_id,
                  ", ".join(f"{step} {done.seconds[step]:.3f} s" for step in STEPS
                            if step in done.seconds))
        return f"file://{done.dest}"

    def _make_key(self, enrolled: Enrollment, ref: str | NewKey) -> tuple[str, bytes]:
        """Create or look up the KEK and fetch its bytes (the key thread)."""
        with self.done.timed("key"):
            key_id = enrolled.key(ref)
        with self.done.timed("get"):
            key = enrolled.manager.get_key(key_id)
        if self.conf[GROUP].format == "luks":
            luks.passphrase(key, key_id)  # a KEK Cinder cannot use: before it is registered on
        return key_id, key

    def _register(self, enrolled: Enrollment, consumer: Consumer,
                  keyed: Future[tuple[str, bytes]]) -> None:
        """Register the image on its KEK, once the key exists (the key thread)."""
        key_id, _ = keyed.result()
        with self.done.timed("consumer"):
            enrolled.register(consumer, [key_id])

    def _wait(self, keyed: Future[tuple[str, bytes]]) -> tuple[str, bytes]:
        """The key id and bytes, once made (the encryption waits here, if at all)."""
        with self.done.timed("wait"):
            return keyed.result()

    # --- revert --------------------------------------------------------------------------

    def revert(self, result: Any = None, **kwargs: Any) -> None:
        """Undo everything: key, consumer, files, properties; the image goes back to queued."""
        self._undo_keys_and_files()
        with self.action_wrapper as action:
            for name in self.done.properties:
                action.pop_extra_property(name)
            if self.done.properties:
                action.set_image_attribute(**self.done.attributes)
            if action.image_status != "queued" and not _conversion_reverts_after(self.conf):
                action.set_image_attribute(status="queued")
            if self.stores:
                action.remove_importing_stores(self.stores)
                action.add_failed_stores(self.stores)
        if self.src is not None:
            with contextlib.suppress(FileNotFoundError):
                self.src.unlink()
        self.done = _Done()

    def _undo_keys_and_files(self) -> None:
        """Remove the encrypted file, and what the enrollment created (key, consumer)."""
        done = self.done
        if done.noted is not None:
            recent.forget(*done.noted)
        if done.dest is not None:
            with contextlib.suppress(FileNotFoundError):
                done.dest.unlink()
        if done.enrollment is not None:
            for line in done.enrollment.undo():
                LOG.error("image %s: %s", self.image_id, line)
        done.dest = done.enrollment = done.noted = None


def _conversion_reverts_after(conf: cfg.ConfigOpts) -> bool:
    """Whether Glance's image_conversion runs before us, so its revert comes after ours.

    It sets the status to queued unconditionally, and Glance refuses queued -> queued: the
    revert would fail and the image keep its import lock. A later plugin's revert (any
    plugin listed after us) comes before ours: hence the status check in ``revert``.
    """
    try:
        plugins = list(conf.image_import_opts.image_import_plugins)
    except AttributeError:  # cfg.NoSuchOptError: not inside Glance
        return False
    ours = plugins.index("image_encryption") if "image_encryption" in plugins else 0
    return "image_conversion" in plugins[:ours]


def get_flow(**kwargs: Any) -> Any:
    """The plugin's flow (entry point ``glance.image_import.plugins``, name image_encryption)."""
    conf = cfg.CONF
    register_opts(conf)
    return linear_flow.Flow(kwargs["task_type"]).add(EncryptImage(
        context=kwargs.get("context"), task_id=kwargs["task_id"],
        task_type=kwargs["task_type"], action_wrapper=kwargs["action_wrapper"],
        stores=kwargs.get("backend") or [], conf=conf))

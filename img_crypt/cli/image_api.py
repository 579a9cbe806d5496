"""The Glance image API of ``upload`` and ``download``, through openstacksdk.

A connection comes from clouds.yaml / ``OS_*`` (openstacksdk's loader), or, for development
setups without Keystone, from a Glance URL and a project id (noauth identity headers, as
``reconcile --glance-url`` sends). openstacksdk is imported only when a connection is made, so
the local command paths never load it. Every failure becomes a one-line :class:`GlanceError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from img_crypt.errors import UsageError
from img_crypt.glance.images import NOAUTH_ROLES, GlanceError

DEFAULT_TIMEOUT = 60.0
READ_SIZE = 256 * 1024


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn keystoneauth and openstacksdk errors into one-line GlanceErrors naming ``action``."""
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc
    from requests import RequestException

    try:
        yield
    except ks_exc.Unauthorized:
        raise GlanceError("authentication with Glance failed") from None
    except os_exc.HttpException as e:
        if e.status_code == 401:
            raise GlanceError("authentication with Glance failed") from None
        raise GlanceError(f"Glance refused to {action}: HTTP {e.status_code}: "
                          f"{_first_line(e.details)}") from None
    except (ks_exc.ClientException, os_exc.SDKException, RequestException) as e:
        raise GlanceError(f"cannot {action}: {type(e).__name__}: {_first_line(str(e))}") \
            from None


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:300] if lines else "no details"


def _check(response: Any, action: str) -> None:
    """Raise the GlanceError of an HTTP error answer (the proxy does not raise)."""
    from openstack import exceptions as os_exc

    with _translated(action):
        os_exc.raise_from_response(response)


class ImageApi:
    """The few Glance v2 calls ``upload`` and ``download`` make, on one connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    def noauth(cls, url: str, project_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> ImageApi:
        """A Glance without Keystone at ``url``, used as a member of ``project_id``."""
        import openstack.connection
        from keystoneauth1 import noauth
        from keystoneauth1.session import Session

        session = Session(auth=noauth.NoAuth(), timeout=timeout, additional_headers={
            "X-Identity-Status": "Confirmed", "X-Project-Id": project_id,
            "X-Roles": NOAUTH_ROLES})
        return cls(openstack.connection.Connection(session=session,
                                                   image_endpoint_override=url))

    @classmethod
    def from_cloud(cls, cloud: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> ImageApi:
        """The connection of clouds.yaml entry ``cloud`` (or the ``OS_*`` variables)."""
        import openstack.config
        import openstack.connection
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as os_exc

        try:
            region = openstack.config.OpenStackConfig(load_envvars=True).get_one(cloud=cloud)
        except (os_exc.ConfigException, ks_exc.ClientException, KeyError) as e:
            raise UsageError(f"no usable OpenStack credentials (clouds.yaml or OS_* "
                             f"variables): {_first_line(e)}") from None
        if region.config.get("api_timeout") is None:
            region.config["api_timeout"] = timeout
        return cls(openstack.connection.Connection(config=region))

    def create(self, *, name: str, disk_format: str, container_format: str,
               properties: Mapping[str, str]) -> str:
        """Create a queued image with these properties; return its id."""
        from openstack.image.v2.image import Image

        with _translated("create the image"):
            image = Image.new(name=name, disk_format=disk_format,
                              container_format=container_format, **properties)
            return str(image.create(self.connection.image).id)

    def update(self, image_id: str, properties: Mapping[str, str]) -> None:
        """Add or replace properties of an image."""
        with _translated(f"update image {image_id}"):
            self.connection.image.update_image(image_id, **properties)

    def upload(self, image_id: str, data: Iterable[bytes]) -> None:
        """``PUT /v2/images/{id}/file`` with ``data`` as a chunked body, pulled as it is sent."""
        from openstack.image.v2.image import Image

        with _translated(f"upload the data of image {image_id}"):
            response = Image.existing(id=image_id).upload(self.connection.image, data=data)
        _check(response, f"upload the data of image {image_id}")

    def delete(self, image_id: str) -> None:
        """Delete an image (a missing one is fine)."""
        with _translated(f"delete image {image_id}"):
            self.connection.image.delete_image(image_id, ignore_missing=True)

    def get(self, image_id: str) -> dict[str, Any]:
        """An image's fields and properties, flat, as Glance's JSON has them."""
        with _translated(f"find image {image_id}"):
            image = self.connection.image.get_image(image_id)
        fields = dict(image.properties or {})
        fields.update(id=image.id, status=image.status, disk_format=image.disk_format,
                      container_format=image.container_format, size=image.size)
        return fields

    @contextlib.contextmanager
    def data(self, image_id: str) -> Iterator[Iterator[bytes]]:
        """The stored data of an image, streamed (``GET /v2/images/{id}/file``)."""
        action = f"download the data of image {image_id}"
        with _translated(action):
            response = self.connection.image.download_image(image_id, stream=True)
        try:
            _check(response, action)
            if response.status_code == 204:
                raise GlanceError(f"image {image_id} has no data")
            yield _streamed(response.iter_content(READ_SIZE), action)
        finally:
            response.close()


def _streamed(chunks: Iterator[bytes], action: str) -> Iterator[bytes]:
    """``chunks`` with a dropped connection as a GlanceError."""
    with _translated(action):
        yield from chunks

"""Who sets an image back to queued when an import fails next to Glance's image_conversion.

Glance refuses a queued -> queued transition, and image_conversion's revert sets queued
unconditionally: when it is listed before us its revert comes after ours, so ours must leave
the status to it (tests/test_e2e_glance_conversion.py shows both orders in a real Glance).
"""

from __future__ import annotations

import pytest
from oslo_config import cfg

from img_crypt.glance.plugin import _conversion_reverts_after
from tests.support.glance_import import make_conf


def with_plugins(plugins: list[str]) -> cfg.ConfigOpts:
    conf = make_conf()
    conf.register_opts([cfg.ListOpt("image_import_plugins", default=[])],
                       group="image_import_opts")
    conf.set_override("image_import_plugins", plugins, group="image_import_opts")
    return conf


@pytest.mark.parametrize(("plugins", "expected"), [
    (["image_conversion", "image_encryption"], True),
    (["inject_image_metadata", "image_conversion", "image_encryption"], True),
    (["image_encryption", "image_conversion"], False),
    (["image_encryption"], False),
    (["image_conversion"], False),  # we are not listed: nothing to leave to anyone
    ([], False),
])
def test_the_status_is_left_to_image_conversion_only_when_it_runs_before_us(
        plugins: list[str], expected: bool) -> None:
    assert _conversion_reverts_after(with_plugins(plugins)) is expected


def test_outside_glance_without_its_import_options_we_set_the_status_ourselves() -> None:
    assert _conversion_reverts_after(make_conf()) is False

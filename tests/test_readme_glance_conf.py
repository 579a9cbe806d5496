"""README.md's Glance block pastes as it is: oslo.config reads from it what it shows.

oslo.config keeps everything after ``=`` as the value, an inline ``# comment`` included, so
``image_import_plugins = ['image_encryption']  # ...`` breaks every import and
``driver = img_crypt  # ...`` silently disables the delete hook. The real-auth Glance
(tests/test_e2e_realauth.py) runs this same block, with the test cloud's addresses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from castellan import key_manager as castellan_key_manager
from keystoneauth1 import loading as ks_loading
from keystoneauth1.identity import generic
from oslo_config import cfg, types

from img_crypt.glance import opts
from tests.support.readme_conf import glance_block, inline_comments, operator_conf

BARBICAN = "http://127.0.0.1:9311"
KEYSTONE = "http://127.0.0.1:5000/v3"
PASSWORD = "s3cret-with-#-and-="


def pasted(tmp_path: Path, block: str) -> cfg.ConfigOpts:
    """A Glance-like ConfigOpts reading ``block`` (with placeholders filled) as its file."""
    path = tmp_path / "glance-api.conf"
    path.write_text(operator_conf(block, barbican_url=BARBICAN, keystone_url=KEYSTONE,
                                  glance_password=PASSWORD))
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.ListOpt("image_import_plugins", bounds=True,  # as Glance 33 has it
                                    item_type=types.String(quotes=True))],
                       group="image_import_opts")
    conf.register_opts([cfg.ListOpt("container_formats")], group="image_format")
    conf.register_opts([cfg.MultiStrOpt("driver", default=[])],
                       group="oslo_messaging_notifications")
    opts.register_opts(conf)
    conf(["--config-file", str(path)])
    castellan_key_manager.API(conf)  # registers [key_manager] and [barbican]
    return conf


def test_the_readme_glance_block_has_no_inline_comments() -> None:
    assert inline_comments(glance_block()) == []


def test_oslo_config_reads_from_the_readme_block_what_it_shows(tmp_path: Path) -> None:
    conf = pasted(tmp_path, glance_block())
    assert conf.image_import_opts.image_import_plugins == ["image_encryption"]
    assert conf.oslo_messaging_notifications.driver == ["img_crypt", "messagingv2"]
    assert "encrypted" in conf.image_format.container_formats
    assert conf.key_manager.backend == "barbican"
    assert conf.barbican.barbican_endpoint == BARBICAN
    assert conf.barbican.auth_endpoint == KEYSTONE
    auth = ks_loading.load_auth_from_conf_options(conf, opts.AUTH_GROUP)
    assert isinstance(auth, generic.Password)
    loaded = vars(auth)  # what keystoneauth will send to Keystone
    assert (auth.auth_url, loaded["_username"], loaded["_password"],
            loaded["_project_name"]) == (KEYSTONE, "glance", PASSWORD, "service")


# --- the checker itself -----------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "image_import_plugins = ['image_encryption']     # runs for glance-direct",
    "driver = img_crypt  # the delete hook",
    "[image_encryption_auth]         # service credentials",
    "barbican_endpoint = https://barbican.example.com:9311   # or the catalog",
])
def test_an_inline_comment_is_found(line: str) -> None:
    assert inline_comments(f"[s]\n{line}\nother = 1\n") == [line]


@pytest.mark.parametrize("line", [
    "# a comment on its own line",
    "    # an indented comment",
    "; the other comment character",
    "# kek_id = SECRET_UUID  # commented-out options may say anything",
    "[image_encryption_auth]",
    "barbican_endpoint = https://barbican.example.com:9311",
])
def test_comment_lines_and_plain_values_are_fine(line: str) -> None:
    assert inline_comments(f"{line}\n") == []


def test_a_readme_block_with_an_inline_comment_gives_oslo_config_another_value(
        tmp_path: Path) -> None:
    """Why the checker exists: the old README block, as oslo.config sees it."""
    block = glance_block().replace(
        "driver = img_crypt\n", "driver = img_crypt                 # the delete hook\n")
    assert pasted(tmp_path, block).oslo_messaging_notifications.driver[0] != "img_crypt"


def test_a_placeholder_missing_from_the_readme_block_is_reported() -> None:
    block = glance_block().replace("https://barbican.example.com:9311", "http://elsewhere")
    with pytest.raises(AssertionError, match=r"barbican\.example\.com"):
        operator_conf(block, barbican_url=BARBICAN, keystone_url=KEYSTONE,
                      glance_password=PASSWORD)

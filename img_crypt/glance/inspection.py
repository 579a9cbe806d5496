"""Glance 33's import-time format rules, applied by the plugin to the staged plaintext.

Glance inspects image data as it stores it (``glance.location.ImageProxy.set_data``), but once
the plugin has encrypted the data there is nothing left to inspect. So the plugin runs the same
inspector (oslo.utils ``imageutils.format_inspector``) over the plaintext before any key exists,
and applies the same rules with the same options (Glance's own ``[image_format]``):

- only ``container_format = bare`` is inspected;
- the detected format must be the ``disk_format`` (``require_image_format_match``), except that a
  ``disk_format`` of ``raw`` accepts anything (with a warning), and an uninspectable one (``ami``,
  ...) accepts data nothing recognises; ISO with a GPT in front counts as ISO;
- the detected format's safety checks always run (backing file, data file, unknown features,
  VMDK extents, LUKS version, MBR); ``gpt_safety_checks_nonfatal`` relaxes those of a GPT.

A refusal raises :class:`UnsafeImageError` with the message Glance gives its ``InvalidImageData``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from oslo_utils.imageutils import format_inspector as fi

from img_crypt.errors import UnsafeImageError

LOG = logging.getLogger("img_crypt.glance.inspection")

CHUNK = 1 << 20
FORMAT_MISMATCH = "Image disk_format {claimed} does not match stream data {found}"
SAFETY_FAILED = "Image failed safety checks"
INSPECTION_FAILED = "Image format inspection failed"


@dataclass(frozen=True)
class Verdict:
    """What Glance would record: the detected format and the image's ``virtual_size``."""

    format: str | None  # None: not inspected (container_format is not bare)
    virtual_size: int | None  # None: Glance records none


def check(path: Path, container_format: str | None, disk_format: str | None,
          conf: Any) -> Verdict:
    """Inspect the file at ``path`` as Glance inspects an upload; raise if Glance would refuse.

    ``conf`` is Glance's configuration (its ``[image_format]`` options are read).
    """
    if container_format != "bare":
        return Verdict(None, None)
    wrapper = _read_all(path)
    options = conf.image_format
    inspector: fi.FileInspector | None = None
    size = 0
    try:
        inspector = _detected(wrapper)
        size = _virtual_size(inspector, disk_format)
        inspector.safety_check()
    except fi.ImageFormatError as e:
        if options.require_image_format_match:
            raise _refused(str(e)) from None
        LOG.warning("image format %s did not match; unable to calculate virtual size",
                    disk_format)
    except fi.SafetyCheckFailed as e:
        # (Glance also forgives aki/ari images their MBR, but a GPT labelled aki or ari
        # never gets here: its format does not match)
        fatal = set(e.failures) - set(options.gpt_safety_checks_nonfatal)
        if fatal or str(inspector) != "gpt":
            raise _refused(SAFETY_FAILED, f"{inspector} {e}") from None
        LOG.warning("non-fatal %s", e)
    except AttributeError:  # Glance's set_data lets this through as "not inspected" (text
        # then binary data breaks oslo.utils 10.2's VMDK inspector this way)
        LOG.warning("the format inspector could not tell the format of the image")
    except Exception as e:
        LOG.error("unable to determine the image's format: %s", e)
        if options.require_image_format_match:
            raise _refused(INSPECTION_FAILED) from None
    return Verdict(None if inspector is None else str(inspector), size or None)


def _read_all(path: Path) -> fi.InspectWrapper:
    """Feed the whole file to every inspector, as the upload to the store does."""
    with open(path, "rb") as source:
        wrapper = fi.InspectWrapper(source)
        try:
            while wrapper.read(CHUNK):
                pass
        finally:
            wrapper.close()
    return wrapper


def _detected(wrapper: fi.InspectWrapper) -> fi.FileInspector:
    """The one format the data matched (raises ImageFormatError for several)."""
    matched = {str(i): i for i in wrapper.formats or ()}
    if matched.keys() == {"iso", "gpt"}:  # a bootable ISO may carry a GPT in front
        return matched["iso"]
    # never None: the wrapper has seen the end of the file
    return cast(fi.FileInspector, wrapper.format)


def _virtual_size(inspector: fi.FileInspector, disk_format: str | None) -> int:
    """The virtual size Glance records, or 0; raises ImageFormatError on a mismatch."""
    found = str(inspector)
    if found == disk_format:
        return int(inspector.virtual_size)
    if found == "raw" and disk_format not in fi.ALL_FORMATS:
        LOG.info("image format %s is not an inspectable type", disk_format)
        return 0
    if disk_format == "raw":  # raw is what Glance cannot inspect: it keeps the byte size
        LOG.warning("image claims disk_format raw but is actually %s", found)
        return int(inspector.actual_size)
    raise fi.ImageFormatError(FORMAT_MISMATCH.format(claimed=disk_format, found=found))


def _refused(message: str, detail: str | None = None) -> UnsafeImageError:
    LOG.warning("image refused: %s", detail or message)
    return UnsafeImageError(message)

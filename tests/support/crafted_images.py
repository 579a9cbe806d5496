"""Crafted disk images for the format-inspection tests: valid ones, and the ones Glance refuses.

Each :class:`Case` names the image, the ``disk_format`` and ``container_format`` it is uploaded
with, and what Glance 33 does with it on import under its default configuration (``accepted``,
and the ``virtual_size`` it records). Images are small files built with the real tools
(``qemu-img``, ``cryptsetup``) or, where no tool is installed (ISO 9660, GPT), from their
on-disk layout, byte by byte.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.data import seeded_bytes
from tests.support.luks_tools import run

KiB, MiB = 1 << 10, 1 << 20
SAFETY = "Image failed safety checks"
RAW_SIZE = 1 * MiB
QCOW2_VIRTUAL_SIZE = 64 * MiB
ISO_BLOCKS = 40  # 80 KiB: the 32 KiB system area, the descriptors, some data
ISO_BLOCK = 2048
GPT_SIZE = 1 * MiB
HOST_FILE = "/etc/passwd"  # what a hostile backing file or extent points at
FILE_SIZE = -1  # an expected virtual_size: the size of the image file itself

Builder = Callable[[Path], Path]


@dataclass(frozen=True)
class Case:
    """One crafted image and Glance 33's verdict on it."""

    name: str
    build: Builder
    disk_format: str
    accepted: bool
    virtual_size: int | None = None  # Glance's record when accepted: None for none, FILE_SIZE
    container_format: str = "bare"
    message: str = ""  # Glance's reason when refused

    def __str__(self) -> str:
        return self.name

    def expected_virtual_size(self, image: Path) -> int | None:
        """The ``virtual_size`` Glance records for ``image`` (built by this case)."""
        return image.stat().st_size if self.virtual_size == FILE_SIZE else self.virtual_size


# --- builders: each writes one file into a directory and returns its path ---------------------


def raw(directory: Path) -> Path:
    """Unformatted bytes (no header any inspector recognises)."""
    path = directory / "raw.img"
    path.write_bytes(b"\0" * 4096 + seeded_bytes(RAW_SIZE - 4096, 14))
    return path


def text_then_binary(directory: Path) -> Path:
    """A text first sector, then binary bytes: oslo.utils 10.2's VMDK inspector takes the text
    for a VMDK descriptor, fails on the bytes, and then breaks the format decision
    (AttributeError), which Glance's set_data treats as "not inspected": accepted as it is."""
    path = directory / "text-then-binary.img"
    path.write_bytes(b"IMG-CRYPT CRAFTED TEXT LINE\n" * 64 + seeded_bytes(RAW_SIZE, 15))
    return path


def qcow2(directory: Path) -> Path:
    """An empty qcow2 of QCOW2_VIRTUAL_SIZE, as ``qemu-img create`` writes it."""
    path = directory / "plain.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(path), str(QCOW2_VIRTUAL_SIZE))
    return path


def qcow2_backing_file(directory: Path) -> Path:
    """A qcow2 whose backing file is a file of the host (CVE-2015-5162 style)."""
    path = directory / "backing.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", HOST_FILE, "-F", "raw", "-u",
        str(path), str(QCOW2_VIRTUAL_SIZE))
    return path


def qcow2_data_file(directory: Path) -> Path:
    """A qcow2 with an external data file (its data would be read from another path)."""
    path = directory / "data-file.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
        f"data_file={directory / 'external.raw'}", str(path), str(MiB))
    return path


def qcow2_bad_cluster_size(directory: Path) -> Path:
    """A qcow2 whose header passes the format inspector but which qemu-img cannot open
    (cluster_bits 8: "Unsupported cluster size")."""
    path = directory / "bad-cluster.qcow2"
    header = bytearray(qcow2(directory).read_bytes())
    header[20:24] = struct.pack(">I", 8)
    path.write_bytes(header)
    return path


def qcow2_truncated(directory: Path) -> Path:
    """The first 48 bytes of a valid qcow2: the magic, but not the whole header."""
    path = directory / "truncated.qcow2"
    path.write_bytes(qcow2(directory).read_bytes()[:48])
    return path


def vmdk(directory: Path) -> Path:
    """A monolithicSparse VMDK (qemu-img's default subformat)."""
    path = directory / "disk.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", str(path), str(QCOW2_VIRTUAL_SIZE))
    return path


def vhd(directory: Path) -> Path:
    """A dynamic VHD (qemu-img's ``vpc``)."""
    path = directory / "disk.vhd"
    run("qemu-img", "create", "-q", "-f", "vpc", str(path), str(QCOW2_VIRTUAL_SIZE))
    return path


def vmdk_descriptor(directory: Path) -> Path:
    """A text VMDK descriptor whose flat extent is a file of the host."""
    path = directory / "descriptor.vmdk"
    path.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    'createType="monolithicFlat"\n\n'
                    f'RW 2048 FLAT "{HOST_FILE}" 0\n\nddb.adapterType = "ide"\n')
    return path


def _iso_descriptor(kind: int, body: bytes = b"") -> bytes:
    return (bytes([kind]) + b"CD001\x01" + body).ljust(ISO_BLOCK, b"\0")


def _both_endian(fmt: str, value: int) -> bytes:
    return struct.pack("<" + fmt, value) + struct.pack(">" + fmt, value)


def _iso_bytes() -> bytes:
    """An ISO 9660 volume: 16 empty system blocks, a primary volume descriptor, a terminator."""
    pvd = bytearray(_iso_descriptor(1))
    pvd[8:40] = b"IMG-CRYPT".ljust(32)
    pvd[40:72] = b"CRAFTED".ljust(32)
    pvd[80:88] = _both_endian("I", ISO_BLOCKS)
    pvd[120:124] = _both_endian("H", 1)  # volume set size
    pvd[124:128] = _both_endian("H", 1)  # volume sequence number
    pvd[128:132] = _both_endian("H", ISO_BLOCK)
    image = b"\0" * 16 * ISO_BLOCK + bytes(pvd) + _iso_descriptor(255)
    return image.ljust(ISO_BLOCKS * ISO_BLOCK, b"\0")


def iso(directory: Path) -> Path:
    """A minimal ISO 9660 image (no genisoimage here: the layout of ECMA-119)."""
    path = directory / "disk.iso"
    path.write_bytes(_iso_bytes())
    return path


def _partition(boot: int, chs_start: bytes, ostype: int, start: int, sectors: int) -> bytes:
    return struct.pack("<B3sB3sII", boot, chs_start, ostype, b"\xff\xff\xff", start, sectors)


def _protective_mbr(sectors: int, *, extra_partition: bool = False) -> bytes:
    """LBA 0 of a GPT disk: one partition of type 0xEE from LBA 1 (UEFI 2.10, 5.2.3)."""
    entries = _partition(0, b"\x00\x02\x00", 0xEE, 1, sectors - 1)
    if extra_partition:  # a second, MBR-style partition: not a valid protective MBR
        entries += _partition(0x80, b"\x00\x01\x00", 0x83, 2048, 2048)
    return (b"\0" * 446 + entries.ljust(64, b"\0") + b"\x55\xaa")


def _gpt_header(sectors: int, entries_crc: int) -> bytes:
    """The primary GPT header at LBA 1, its CRC32 filled in."""
    fields = [b"EFI PART", 0x00010000, 92, 0, 0, 1, sectors - 1, 34, sectors - 34,
              uuid.UUID(int=14).bytes_le, 2, 128, 128, entries_crc]
    layout = "<8sIIIIQQQQ16sQIII"
    crc = zlib.crc32(struct.pack(layout, *fields))
    fields[4] = crc
    return struct.pack(layout, *fields).ljust(512, b"\0")


def _gpt_bytes(*, extra_partition: bool = False) -> bytes:
    sectors = GPT_SIZE // 512
    entries = b"\0" * 128 * 128
    return (_protective_mbr(sectors, extra_partition=extra_partition)
            + _gpt_header(sectors, zlib.crc32(entries)) + entries).ljust(GPT_SIZE, b"\0")


def gpt(directory: Path) -> Path:
    """A GPT disk with an empty partition table behind a valid protective MBR."""
    path = directory / "gpt.img"
    path.write_bytes(_gpt_bytes())
    return path


def gpt_extra_partition(directory: Path) -> Path:
    """A GPT disk whose protective MBR defines a second partition (MBR safety check fails)."""
    path = directory / "gpt-extra.img"
    path.write_bytes(_gpt_bytes(extra_partition=True))
    return path


def iso_gpt_hybrid(directory: Path) -> Path:
    """An ISO with a protective MBR in its system area (bootable as a disk, like isohybrid)."""
    path = directory / "hybrid.iso"
    image = _iso_bytes()
    path.write_bytes(_protective_mbr(len(image) // 512) + image[512:])
    return path


def _luks(directory: Path, version: int) -> Path:
    path = directory / f"luks{version}.img"
    with path.open("wb") as f:
        f.truncate(4 * MiB)
    sizes = ["--luks2-metadata-size", "16k", "--luks2-keyslots-size", "512k"] \
        if version == 2 else []
    run("cryptsetup", "luksFormat", "-q", "--batch-mode", "--type", f"luks{version}",
        "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", *sizes, "--key-file=-",
        str(path), stdin=b"crafted-passphrase")
    return path


def luks1(directory: Path) -> Path:
    """A LUKS version 1 container (cryptsetup luksFormat on a file)."""
    return _luks(directory, 1)


def luks2(directory: Path) -> Path:
    """A LUKS version 2 container (cryptsetup luksFormat on a file)."""
    return _luks(directory, 2)


def mismatch(claimed: str, found: str) -> str:
    """Glance's message for data of another format than its disk_format."""
    return f"Image disk_format {claimed} does not match stream data {found}"


# --- the cases --------------------------------------------------------------------------------

CASES = (
    Case("valid raw", raw, "raw", True, RAW_SIZE),
    Case("valid qcow2", qcow2, "qcow2", True, QCOW2_VIRTUAL_SIZE),
    Case("qcow2 with a backing file", qcow2_backing_file, "qcow2", False, message=SAFETY),
    Case("qcow2 with an external data file", qcow2_data_file, "qcow2", False, message=SAFETY),
    Case("raw data labelled qcow2", raw, "qcow2", False,
         message=mismatch("qcow2", "raw")),
    Case("valid vmdk", vmdk, "vmdk", True, QCOW2_VIRTUAL_SIZE),
    Case("vmdk descriptor naming a host file", vmdk_descriptor, "vmdk", False, message=SAFETY),
    Case("valid iso", iso, "iso", True, ISO_BLOCKS * ISO_BLOCK),
    Case("iso with a protective MBR (iso+gpt)", iso_gpt_hybrid, "iso", True,
         ISO_BLOCKS * ISO_BLOCK),
    Case("gpt disk labelled raw", gpt, "raw", True, GPT_SIZE),
    Case("gpt disk with an extra MBR partition", gpt_extra_partition, "raw", False,
         message=SAFETY),
    Case("LUKS1 labelled raw", luks1, "raw", True, 4 * MiB),
    Case("LUKS2 labelled raw", luks2, "raw", False, message=SAFETY),
    Case("truncated qcow2 header", qcow2_truncated, "qcow2", False,
         message=mismatch("qcow2", "raw")),
    Case("qcow2 labelled raw", qcow2, "raw", True, FILE_SIZE),
    Case("qcow2 with a backing file labelled raw", qcow2_backing_file, "raw", False,
         message=SAFETY),
    Case("qcow2 labelled ami (not raw)", qcow2, "ami", False, message=mismatch("ami", "qcow2")),
    Case("raw data labelled ami", raw, "ami", True, None),
    Case("text then binary labelled qcow2 (inspector quirk)", text_then_binary, "qcow2", True,
         None),
    Case("qcow2 with a backing file in an ovf container", qcow2_backing_file, "qcow2", True,
         None, container_format="ovf"),
)
"""What Glance 33 does with each image on import, with its default configuration."""

"""Write a sample raw disk image: an MBR with one Linux partition and mixed content.

Deterministic for a given size (a seeded generator), so runs are comparable. The content mixes
zero runs (as real images have), text, and pseudo-random blocks.
"""

from __future__ import annotations

import argparse
import random
import struct

MIB = 1 << 20


def mbr(total_sectors: int) -> bytes:
    """A 512-byte MBR with one type-0x83 partition from sector 2048 to the end."""
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048,
                        total_sectors - 2048)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def main() -> None:
    """Write the image named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args()
    rng = random.Random(20261125)
    with open(args.path, "wb") as out:
        out.write(mbr(args.size_mib * MIB // 512))
        out.write(bytes(MIB - 512))
        for block in range(1, args.size_mib):
            kind = block % 4
            if kind == 0:
                out.write(bytes(MIB))
            elif kind == 1:
                line = f"block {block}: img-crypt sample image\n".encode()
                out.write((line * (MIB // len(line) + 1))[:MIB])
            else:
                out.write(rng.randbytes(MIB))


if __name__ == "__main__":
    main()

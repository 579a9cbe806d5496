#!/usr/bin/env bash
# The main job: make a 64 MiB sample disk image, encrypt it with the embedded local key store,
# inspect it, decrypt it and verify the bytes. Everything lands in demo-out/.
# --cloud: the plugin's job on a real Keystone + Barbican + Glance instead (scripts/cloud_demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = --cloud ]; then
  # The same job on a real cloud on 127.0.0.1 (Keystone, Barbican, Glance with the plugin):
  # scripts/cloud_demo.py. It needs openstacksdk, the `barbican` extra.
  .venv/bin/python -c 'import openstack' 2>/dev/null || .venv/bin/python -m pip install -q -e ".[barbican]"
  exec .venv/bin/python -m scripts.cloud_demo "${@:2}"
fi
export PATH="$PWD/.venv/bin:$PATH"

out=demo-out
rm -rf "$out" && mkdir -p "$out"
export IMG_CRYPT_KEY_STORE="$PWD/$out/keys"   # a store of its own: the demo touches no other keys
image_id=$(.venv/bin/python -c 'import uuid; print(uuid.uuid4())')

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "make a 64 MiB raw disk image (MBR, one partition, mixed data)" \
  .venv/bin/python scripts/make_sample_image.py "$out/disk.raw" --size-mib 64
step "encrypt it under a new key in the local key store, bound to image $image_id" \
  img-crypt encrypt "$out/disk.raw" "$out/disk.raw.icr" --image-id "$image_id"
step "inspect the encrypted file (no key needed)" img-crypt inspect "$out/disk.raw.icr"
step "decrypt it, requiring the same image id" \
  img-crypt decrypt "$out/disk.raw.icr" "$out/disk.decrypted.raw" --image-id "$image_id"
step "decrypt only the MBR (random access: reads 2 chunks, not the whole file)" \
  img-crypt decrypt "$out/disk.raw.icr" "$out/mbr.bin" --range 0:512
step "verify" cmp "$out/disk.raw" "$out/disk.decrypted.raw"
cmp <(head -c 512 "$out/disk.raw") "$out/mbr.bin"
printf '\nOK: %s bytes encrypted to %s bytes and decrypted byte-identical (sha256 %s).\n' \
  "$(stat -c %s "$out/disk.raw")" "$(stat -c %s "$out/disk.raw.icr")" \
  "$(sha256sum "$out/disk.raw" | cut -c1-16)…"
printf 'Key store: %s (keys: %s)\n' "$IMG_CRYPT_KEY_STORE" "$(img-crypt keys list | wc -l)"

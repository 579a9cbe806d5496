"""Key slots and the header MAC: wrap the DEK under KEKs, seal a header, open it again.

FORMAT.md sections 3, 5 and 7 (steps 4 and 5). Pure: KEK bytes come in through the caller.
"""

from __future__ import annotations

import hmac
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from img_crypt._text import printable
from img_crypt.errors import (
    AuthenticationError,
    InvalidValueError,
    KeyManagerError,
    KeyNotFoundError,
    UsageError,
)
from img_crypt.format import MAC_SIZE, WRAP_NONCE_SIZE, WRAPPED_DEK_SIZE, Header, KeySlot

KekLookup = Callable[[str, str], "bytes | None"]
"""Maps a slot's (kind, key id) to the KEK's bytes, or None when that key is not available.

It may raise a :class:`KeyManagerError` (forbidden, unavailable, not configured ...): that
slot is then skipped with the error as its reason.
"""


@dataclass(frozen=True, repr=False)
class Kek:
    """A key-encryption key and where it lives; ``repr`` never shows the key."""

    kind: str
    key_id: str
    key: bytes

    def __repr__(self) -> str:
        return f"Kek(kind={self.kind!r}, key_id={self.key_id!r})"


def _slot_aad(binding: bytes, label: bytes) -> bytes:
    return b"img-crypt slot v1\x00" + binding + label


def _mac(dek: bytes, signed: bytes) -> bytes:
    key = HKDF(hashes.SHA256(), 32, salt=None, info=b"img-crypt header-mac v1").derive(dek)
    return hmac.digest(key, signed, "sha256")


def _wrap(dek: bytes, key: bytes, slot: KeySlot, binding: bytes, nonce: bytes) -> KeySlot:
    """Fill ``slot`` (kind and key id set) with ``nonce`` and the DEK wrapped under ``key``."""
    wrapped = AESGCM(key).encrypt(nonce, dek, _slot_aad(binding, slot.label()))
    return replace(slot, nonce=nonce, wrapped_dek=wrapped)


def seal(dek: bytes, image_id: uuid.UUID | None, keks: Sequence[Kek],
          kept: Sequence[KeySlot] = (), nonce: Callable[[], bytes] | None = None) -> Header:
    """Build a sealed header: ``kept`` slots as they are, plus a new slot per KEK."""
    make_nonce = nonce or (lambda: os.urandom(WRAP_NONCE_SIZE))
    if not keks and not kept:
        raise UsageError("a file needs at least one key slot")
    try:  # validate kinds, ids and uniqueness before any wrapping
        blanks = [KeySlot(kind=k.kind, key_id=k.key_id, nonce=bytes(WRAP_NONCE_SIZE),
                          wrapped_dek=bytes(WRAPPED_DEK_SIZE)) for k in keks]
        draft = Header(image_id=image_id, slots=(*kept, *blanks))
    except InvalidValueError as e:
        raise UsageError(f"invalid key slots: {e}") from None
    binding = draft.binding()
    fresh = (_wrap(dek, k.key, blank, binding, make_nonce())
             for k, blank in zip(keks, blanks, strict=True))
    unsealed = replace(draft, slots=(*kept, *fresh))
    return replace(unsealed, mac=_mac(dek, unsealed.signed_part()))


def open_dek(header: Header, raw: bytes, lookup: KekLookup) -> bytes:
    """Unwrap the DEK from the first slot that opens, and verify the header MAC.

    Every slot is tried in order: a key that is missing, refused or unreachable, or that
    fails to unwrap its slot, does not stop a later slot that works. When none opens, a slot
    that failed to unwrap makes it an :class:`AuthenticationError` (opaque, as always);
    otherwise the error names each slot with its reason, in one escaped line.
    """
    binding = header.binding()
    refused: list[tuple[KeySlot, KeyManagerError]] = []
    unwrap_failed = False
    for slot in header.slots:
        try:
            kek = lookup(slot.kind, slot.key_id)
        except KeyManagerError as e:
            refused.append((slot, e))
            continue
        if kek is None:
            refused.append((slot, KeyNotFoundError("no such key")))
            continue
        try:
            dek = AESGCM(kek).decrypt(slot.nonce, slot.wrapped_dek,
                                      _slot_aad(binding, slot.label()))
        except (InvalidTag, ValueError):
            unwrap_failed = True
            continue
        if not hmac.compare_digest(_mac(dek, raw[:-MAC_SIZE]), header.mac):
            raise AuthenticationError()
        return dek
    if unwrap_failed:
        raise AuthenticationError()
    raise _no_slot_opened(refused)


def _no_slot_opened(refused: Sequence[tuple[KeySlot, KeyManagerError]]) -> KeyManagerError:
    """One error naming every slot's reason; of their common type when they share one."""
    kinds = {type(error) for _, error in refused}
    kind = kinds.pop() if len(kinds) == 1 else KeyManagerError
    reasons = "; ".join(f"{printable(slot.kind)}:{printable(slot.key_id)} -> "
                        f"{printable(str(error) or type(error).__name__)}"
                        for slot, error in refused)
    return kind(f"no key available for any key slot of this file: {reasons}")

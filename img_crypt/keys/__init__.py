"""Key managers: where key-encryption keys (KEKs) live.

The envelope layer only ever sees a :class:`~img_crypt.keys.base.KeyManager`; whether it is
the embedded local store or Barbican is the caller's choice.
"""

from img_crypt.keys.base import Consumer, KeyInfo, KeyManager

__all__ = ["Consumer", "KeyInfo", "KeyManager"]

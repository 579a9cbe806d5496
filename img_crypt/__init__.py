"""img-crypt: envelope encryption of OpenStack images.

The public, pure API (keys and bytes only) lives in :mod:`img_crypt.envelope`; key managers
in :mod:`img_crypt.keys`; the command line in :mod:`img_crypt.cli`.
"""

__version__ = "0.1.0"

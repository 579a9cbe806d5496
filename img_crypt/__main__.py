"""``python -m img_crypt``: the same as the ``img-crypt`` command."""

from img_crypt.cli import run

run()

"""Glance integration: the image-import plugin, the delete lifecycle and their options."""

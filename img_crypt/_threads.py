"""The limits on worker threads, in a module light enough for the CLI's parser to import.

:mod:`img_crypt._payload_parallel` enforces them; ``--threads``'s help text quotes them.
"""

DEFAULT_MAX_THREADS = 8
"""The default never exceeds this many workers (memory stays flat on large hosts)."""
MAX_THREADS = 256
"""The most workers a caller may ask for."""

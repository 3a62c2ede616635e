"""Refusing paths that are no regular file before reading them whole.

A FIFO nobody feeds blocks ``open`` for good and a device such as ``/dev/zero`` is read
without end: neither is a model, label or key file, whatever a config names.
"""

from __future__ import annotations

import errno
import os
import stat


def check_regular(path: str | os.PathLike[str]) -> None:
    """Refuse a path that exists but is no regular file, before it is opened.

    Raises:
        OSError: ``EINVAL`` "not a regular file" (or the stat's own error, e.g. ENOENT).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file")

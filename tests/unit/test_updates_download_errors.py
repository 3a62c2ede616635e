"""How a failed write of a download is reported."""

from __future__ import annotations

import errno

from edge_agent.updates.download import write_failure


def test_a_full_disk_or_quota_reads_as_no_space():
    assert write_failure(OSError(errno.ENOSPC, "No space left on device")) == "no_space"
    assert write_failure(OSError(errno.EDQUOT, "Disk quota exceeded")) == "no_space"
    assert write_failure(OSError(errno.EIO, "Input/output error")) == "io_error"

"""Memory bounds behind the benchmark claims (Linux: read from /proc/self/status).

Reading a compressed file tensor by tensor must not keep the compressed bytes mapped: they
would count in the process's RSS until the Reader closes, up to the size of the file.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import ztensor_array as zt

STATUS = "/proc/self/status"


def _rss_file() -> int:
    with open(STATUS) as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    pytest.skip("this kernel does not report RssFile")


@pytest.mark.skipif(not os.path.exists(STATUS), reason="needs Linux /proc/self/status")
def test_compressed_reads_do_not_keep_the_file_mapped(tmp_path):
    path = tmp_path / "packed.zt"
    rng = np.random.default_rng(0)
    arrays = {f"t{i}": rng.standard_normal(1 << 20, np.float32) for i in range(8)}  # 32 MiB
    with zt.Writer(path) as w:
        for name, a in arrays.items():
            w.add_tensor(name, a, compress=1)
    assert os.path.getsize(path) > 24 << 20  # random floats barely compress
    with zt.Reader(path) as r:
        before = _rss_file()
        for name, a in arrays.items():
            np.testing.assert_array_equal(r.read_tensor(name), a)
        grown = _rss_file() - before
        # reading the same tensor again still works after its pages were released
        np.testing.assert_array_equal(r.read_tensor("t3"), arrays["t3"])
    assert grown < 8 << 20, f"RSS grew by {grown >> 20} MiB of mapped compressed bytes"

"""The container itself: write and read at each encoding, digests, open latency vs count."""

from __future__ import annotations

import os

import numpy as np

import ztensor_array as zt
from ztensor_array.validation import forget_memo

from .common import MiB, save, tensors

ENCODINGS = {"raw": 0, "zstd-1": 1, "zstd-3": 3, "zstd-19": 19}
CHECKSUMS = ["none", "crc32c", "sha256"]


def _checksum(name: str):
    return None if name == "none" else name


class WriteRead:
    """8 MiB in 32 tensors, every encoding x digest combination."""

    params = (list(ENCODINGS), CHECKSUMS)
    param_names = ["encoding", "checksum"]
    timeout = 300

    def setup_cache(self):
        data = tensors(8 * MiB, 32)
        files = {}
        for enc, level in ENCODINGS.items():
            for ck in CHECKSUMS:
                files[enc, ck] = save(f"in-{enc}-{ck}.zt", data, level, _checksum(ck))
        return files

    def setup(self, files, encoding, checksum):
        self.data = tensors(8 * MiB, 32)
        self.path = files[encoding, checksum]
        self.out = os.path.abspath(f"out-{encoding}-{checksum}.zt")

    def teardown(self, files, encoding, checksum):
        if os.path.exists(self.out):
            os.unlink(self.out)

    def time_write(self, files, encoding, checksum):
        save(self.out, self.data, ENCODINGS[encoding], _checksum(checksum))

    def time_read_all(self, files, encoding, checksum):
        zt.load_file(self.path, verify_checksum=checksum != "none")

    def track_compression_ratio(self, files, encoding, checksum):
        return sum(a.nbytes for a in self.data.values()) / os.path.getsize(self.path)

    track_compression_ratio.unit = "x"


class OpenLatency:
    """Opening a file (footer, manifest decode and validation) against its tensor count."""

    params = [10, 1_000, 100_000]
    param_names = ["tensors"]
    timeout = 600

    def setup_cache(self):
        files = {}
        rng = np.random.default_rng(0)
        for n in self.params:
            path = f"open-{n}.zt"
            with zt.Writer(path) as w:
                for i in range(n):
                    w.add_tensor(f"t{i:06d}", rng.standard_normal(16, dtype=np.float32))
            files[n] = os.path.abspath(path)
        return files

    def time_open(self, files, n):
        zt.Reader(files[n]).close()

    def time_open_list_metadata(self, files, n):
        with zt.Reader(files[n]) as r:
            [(m.name, m.shape, m.dtype) for m in r]

    def time_open_first_tensor(self, files, n):
        with zt.Reader(files[n]) as r:
            r.read_tensor("t000000")

    # The timings above reopen a file whose validated manifest the process kept (any
    # manifest up to 2 MiB); these pay the decode and the checks, as a first open does.
    def time_first_open(self, files, n):
        forget_memo()
        zt.Reader(files[n]).close()

    def time_first_open_list_metadata(self, files, n):
        forget_memo()
        with zt.Reader(files[n]) as r:
            [(m.name, m.shape, m.dtype) for m in r]


class ZeroCopy:
    """Reading one large raw tensor as a view, as a copy, and with its digest verified."""

    def setup_cache(self):
        a = np.random.default_rng(0).standard_normal((4096, 1024), dtype=np.float32)
        return save("zero-copy.zt", {"w": a}, 0, "crc32c")

    def time_view(self, path):
        with zt.Reader(path) as r:
            r.read_tensor("w")

    def time_copy(self, path):
        with zt.Reader(path) as r:
            r.read_tensor("w", copy=True)

    def time_view_verified(self, path):
        with zt.Reader(path) as r:
            r.read_tensor("w", verify_checksum=True)

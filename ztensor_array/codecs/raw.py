"""The ``raw`` encoding: stored bytes are the little-endian element bytes themselves."""

from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec


class RawCodec(Codec):
    """Identity codec, so a pipeline can name the zTensor ``raw`` encoding explicitly."""

    codec_id = "ztensor.raw"

    def encode(self, buf):
        return np.ascontiguousarray(buf).view(np.uint8).reshape(-1)

    def decode(self, buf, out=None):
        data = np.frombuffer(buf, dtype=np.uint8)
        if out is None:
            return data
        target = np.frombuffer(out, dtype=np.uint8) if not isinstance(out, np.ndarray) else out
        target.reshape(-1).view(np.uint8)[...] = data
        return out

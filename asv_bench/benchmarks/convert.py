"""Converting foreign checkpoints in: safetensors and GGUF (float32, 32 MiB in 64 tensors)."""

from __future__ import annotations

import os

from .common import MiB, require, tensors


def _write_gguf(path: str, data) -> None:
    gguf = require("gguf")
    w = gguf.GGUFWriter(path, "llama")
    for name, a in data.items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class Convert:
    params = (["safetensors", "gguf"], [False, 3])
    param_names = ["source", "compress"]
    timeout = 300

    def setup_cache(self):
        data = tensors(32 * MiB, 64)
        st = require("safetensors.numpy")
        st.save_file(data, "in.safetensors")
        _write_gguf("in.gguf", data)
        return {
            "safetensors": os.path.abspath("in.safetensors"),
            "gguf": os.path.abspath("in.gguf"),
        }

    def setup(self, files, source, compress):
        self.convert = require("ztensor_array.convert", "convert")
        require("safetensors" if source == "safetensors" else "gguf")
        self.src = files[source]
        self.out = os.path.abspath(f"converted-{source}-{compress}.zt")

    def teardown(self, files, source, compress):
        if os.path.exists(self.out):
            os.unlink(self.out)

    def time_convert(self, files, source, compress):
        self.convert([self.src], self.out, compress=compress, overwrite=True)

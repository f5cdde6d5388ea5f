"""ztensor_array.torch: safetensors-style helpers, tied weights, and the reference's spelling."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")

import re  # noqa: E402

import numpy as np  # noqa: E402
from test_dtypes import TORCH_OF  # noqa: E402

import ztensor_array as za  # noqa: E402
import ztensor_array.torch as zt  # noqa: E402
from ztensor_array.errors import ZTensorError  # noqa: E402


def _tensors() -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, dt in TORCH_OF.items():
        base = torch.randn(3, 4, generator=g) * 50
        if dt is torch.bool:
            out[name] = base > 0
        elif dt.is_complex:
            out[name] = torch.complex(base, -base).to(dt)
        elif dt.is_floating_point:
            out[name] = base.to(dt)
        else:
            out[name] = base.abs().to(torch.int64).to(dt)
    out["u64_big"] = torch.tensor([2**64 - 1, 2**63], dtype=torch.uint64)
    out["scalar"] = torch.tensor(2.5)
    out["empty"] = torch.zeros(0, 7)
    return out


def _assert_tensor_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def test_save_file_load_file_roundtrip(tmp_path):
    tensors = _tensors()
    path = tmp_path / "t.zt"
    zt.save_file(tensors, path, metadata={"framework": "pt"})
    got = zt.load_file(path)
    assert set(got) == set(tensors)
    for n, t in tensors.items():
        _assert_tensor_equal(got[n], t)
        got[n].reshape(-1)[:1] = got[n].reshape(-1)[:1]  # owned and writable
    with za.Reader(path) as r:
        assert r.attributes == {"framework": "pt"}


def test_compression_spellings(tmp_path):
    t = {"w": torch.arange(1000, dtype=torch.float32)}
    for kw in ({"compress": True}, {"compression": True}, {"compression": 7}):
        path = tmp_path / "c.zt"
        zt.save_file(t, path, **kw)
        with za.Reader(path) as r:
            assert r.metadata("w").encoding == "zstd"
        _assert_tensor_equal(zt.load_file(path)["w"], t["w"])
        blob = zt.save(t, **kw)
        _assert_tensor_equal(zt.load(blob)["w"], t["w"])


def test_save_load_bytes():
    tensors = _tensors()
    blob = zt.save(tensors, {"k": "v"})
    assert blob[:8] == b"ZTEN1000" and blob[-8:] == b"ZTEN1000"
    got = zt.load(blob)
    for n, t in tensors.items():
        _assert_tensor_equal(got[n], t)


def test_reference_reads_our_torch_files_and_we_read_its(zref, tmp_path):
    import ztensor.torch as ref_torch

    core = {n: t for n, t in _tensors().items() if n in ("f32", "bf16", "i64", "u8", "bool")}
    ours = tmp_path / "ours.zt"
    zt.save_file(core, ours, compression=True)
    for n, t in ref_torch.load_file(str(ours)).items():
        _assert_tensor_equal(t.clone(), core[n])
    theirs = tmp_path / "theirs.zt"
    ref_torch.save_file(core, str(theirs), compression=3)
    for n, t in zt.load_file(theirs).items():
        _assert_tensor_equal(t, core[n])


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.block = torch.nn.Linear(6, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.lm_head = torch.nn.Linear(6, 11, bias=False)
        self.lm_head.weight = self.embed.weight  # tied
        self.register_buffer("steps", torch.tensor([3], dtype=torch.int64))


def test_save_model_with_tied_weights(tmp_path):
    torch.manual_seed(1)
    model = Tied()
    path = tmp_path / "m.zt"
    zt.save_model(model, path)
    with za.Reader(path) as r:
        names = set(r.tensor_names)
    # stored once, like safetensors does
    assert len({"embed.weight", "lm_head.weight"} & names) == 1
    assert names == set(model.state_dict()) - {"lm_head.weight"} or names == set(
        model.state_dict()
    ) - {"embed.weight"}

    fresh = Tied()
    missing, unexpected = zt.load_model(fresh, path)
    assert missing == [] and unexpected == []
    for n, t in model.state_dict().items():
        _assert_tensor_equal(fresh.state_dict()[n], t)
    assert fresh.lm_head.weight.data_ptr() == fresh.embed.weight.data_ptr()  # still tied
    x = torch.randint(0, 11, (2, 5))
    with torch.no_grad():
        assert torch.equal(fresh.lm_head(fresh.embed(x)), model.lm_head(model.embed(x)))


def test_save_model_matches_safetensors_choice(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="safetensors is in the `test` extra")
    from safetensors import safe_open

    model = Tied()
    st.save_model(model, str(tmp_path / "m.safetensors"))
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        st_names = set(f.keys())
    zt.save_model(model, tmp_path / "m.zt")
    with za.Reader(tmp_path / "m.zt") as r:
        assert set(r.tensor_names) == st_names


def test_save_file_refuses_shared_tensors(tmp_path):
    model = Tied()
    path = tmp_path / "s.zt"
    with pytest.raises(ZTensorError, match="share"):
        zt.save_file(model.state_dict(), path)
    base = torch.arange(10.0)
    with pytest.raises(ZTensorError, match="share"):
        zt.save_file({"a": base[:5], "b": base[5:]}, path)
    with pytest.raises(ZTensorError, match="share"):
        zt.save({"a": base, "b": base})
    assert not path.exists()
    zt.save_file({"a": base, "b": base.clone()}, path)  # clones are fine


def test_load_model_strictness(tmp_path):
    path = tmp_path / "p.zt"
    zt.save_file({"block.weight": torch.zeros(6, 6), "extra": torch.ones(1)}, path)
    with pytest.raises(ZTensorError) as info:
        zt.load_model(Tied(), path)
    assert "extra" in str(info.value) and "embed.weight" in str(info.value)
    model = Tied()
    missing, unexpected = zt.load_model(model, path, strict=False)
    assert unexpected == ["extra"]
    assert "embed.weight" in missing and "block.weight" not in missing
    assert torch.equal(model.block.weight, torch.zeros(6, 6))


def test_non_contiguous_inputs(tmp_path):
    t = torch.arange(24.0).reshape(4, 6)
    u = torch.arange(30.0).reshape(5, 6)
    path = tmp_path / "n.zt"
    zt.save_file({"T": t.t(), "s": u[:, ::2]}, path)
    got = zt.load_file(path)
    assert torch.equal(got["T"], t.t().contiguous()) and torch.equal(got["s"], u[:, ::2])


def test_sparse_torch_tensors_are_refused_clearly(tmp_path):
    sp_t = torch.eye(3).to_sparse()
    with pytest.raises(ZTensorError, match="sparse|layout"):
        with za.Writer(tmp_path / "x.zt") as w:
            w.add_tensor("s", sp_t)


def test_numpy_and_torch_views_agree(tmp_path):
    path = tmp_path / "v.zt"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    with za.Writer(path) as w:
        w.add_tensor("a", a)
    with za.Reader(path) as r:
        t = r.read_tensor("a", to="torch")
        assert torch.equal(t, torch.from_numpy(a))


def test_torch_views_are_private_to_each_read(tmp_path):
    """Torch tensors are writable; a write through one must not leak into later reads."""
    path = tmp_path / "private.zt"
    with za.Writer(path) as w:
        w.add_tensor("a", np.arange(10.0))
    with za.Reader(path) as r:
        first = r.read_tensor("a", to="torch")
        first[0] = 99.0
        second = r.read_tensor("a", to="torch")
        assert float(second[0]) == 0.0
        assert float(r.read_tensor("a")[0]) == 0.0
    assert float(first[0]) == 99.0
    with za.Reader(path) as r:
        assert float(r.read_tensor("a")[0]) == 0.0  # the file never changed


def _both_load_model(tmp_path, tensors: dict, strict: bool):
    """(ours, safetensors') outcome of load_model on files holding the same tensors: the
    (missing, unexpected) pair as sorted lists, or the RuntimeError's key lists."""
    st = pytest.importorskip("safetensors.torch", reason="safetensors is in the `test` extra")
    ours, theirs = tmp_path / "lm.zt", tmp_path / "lm.safetensors"
    zt.save_file(tensors, ours)
    st.save_file(tensors, str(theirs))
    out = []
    for load, path in ((zt.load_model, ours), (st.load_model, str(theirs))):
        torch.manual_seed(3)
        model = Tied()
        try:
            missing, unexpected = load(model, path, strict=strict)
        except RuntimeError as exc:
            out.append(("raised", sorted(re.findall(r"[\w.]+(?=['\"])", str(exc)))))
            continue
        loaded = {k: v.clone() for k, v in model.state_dict().items()}
        out.append((sorted(missing), sorted(unexpected), loaded))
    return out


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "case", ["save_model", "other_tied_name", "both_tied_names", "missing_and_extra"]
)
def test_load_model_reports_like_safetensors(tmp_path, case, strict):
    torch.manual_seed(1)
    state = {k: v.clone() for k, v in Tied().state_dict().items()}
    if case == "save_model":  # what save_model stores: lm_head.weight left out
        del state["lm_head.weight"]
    elif case == "other_tied_name":  # a file that kept the other name of the tied pair
        del state["embed.weight"]
    elif case == "missing_and_extra":
        del state["lm_head.weight"], state["norm.bias"]
        state["extra"] = torch.ones(2)
    ours, theirs = _both_load_model(tmp_path, state, strict)
    assert ours[:2] == theirs[:2]
    if ours[0] != "raised":
        assert ours[2].keys() == theirs[2].keys()
        for name in ours[2]:
            _assert_tensor_equal(ours[2][name], theirs[2][name])
    if case == "missing_and_extra":
        assert ours[0] == "raised" if strict else ours[:2] == (["norm.bias"], ["extra"])


def test_load_model_strict_error_is_a_ztensor_error_and_a_runtime_error(tmp_path):
    from ztensor_array.errors import StateDictError

    path = tmp_path / "p.zt"
    zt.save_file({"extra": torch.ones(1)}, path)
    with pytest.raises(StateDictError) as info:
        zt.load_model(Tied(), path)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ZTensorError)
    assert str(path) in str(info.value) and "'extra'" in str(info.value)


def test_tensors_whose_one_element_has_a_stride_are_saved(tmp_path):
    """torch calls a one-element tensor contiguous whatever its stride (as safetensors'
    slices return them); saving one used to raise torch's RuntimeError."""
    t = torch.arange(16).reshape(8, 2)[1, ::2]
    assert t.stride() == (2,)
    path = tmp_path / "o.zt"
    zt.save_file({"t": t}, path)
    assert zt.load_file(path)["t"].tolist() == [2]

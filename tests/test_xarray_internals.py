"""The xarray names the backend relies on, imported from xarray itself.

``UNLISTED`` are the names xarray's API reference does not promise (why each is needed:
ztensor_array/backends/xarray/internals.py, the only module that imports them). A release
that moves or drops one fails here, by name, instead of breaking reads or writes. The
documented names the backend uses are checked too, so every xarray name it imports from
outside the top-level ``xarray`` namespace is covered.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

xr = pytest.importorskip("xarray")

from ztensor_array.backends.xarray import ZTensorStore, internals  # noqa: E402

UNLISTED = [
    ("xarray.backends.api", "DATAARRAY_VARIABLE"),
    ("xarray.backends.common", "NONE_VAR_NAME"),
    ("xarray.backends.common", "WritableCFDataStore"),
    ("xarray.coding.strings", "CharacterArrayCoder"),
    ("xarray.coding.strings", "EncodedStringCoder"),
    ("xarray.conventions", "encode_dataset_coordinates"),
]

# exported by xarray.backends, described in xarray's backend guide, or in its API pages
DOCUMENTED = [
    ("xarray.backends", "AbstractDataStore"),
    ("xarray.backends", "BackendArray"),
    ("xarray.backends", "BackendEntrypoint"),
    ("xarray.backends", "CachingFileManager"),
    ("xarray.backends", "StoreBackendEntrypoint"),
    ("xarray.conventions", "decode_cf_variable"),
    ("xarray.conventions", "decode_cf_variables"),
    ("xarray.core.indexing", "BasicIndexer"),
    ("xarray.core.indexing", "ExplicitIndexer"),
    ("xarray.core.indexing", "IndexingSupport"),
    ("xarray.core.indexing", "LazilyIndexedArray"),
    ("xarray.core.indexing", "explicit_indexing_adapter"),
    ("xarray", "DataTree"),
]


@pytest.mark.parametrize(
    "module, name", UNLISTED + DOCUMENTED, ids=[f"{m}.{n}" for m, n in UNLISTED + DOCUMENTED]
)
def test_xarray_still_has(module, name):
    found = getattr(importlib.import_module(module), name, None)
    assert found is not None, (
        f"xarray {xr.__version__} has no {module}.{name}, which the ztensor backend uses "
        "(see ztensor_array/backends/xarray/internals.py)"
    )


def test_internals_module_is_exactly_the_unlisted_names():
    assert sorted(internals.__all__) == sorted(name for _, name in UNLISTED)
    for module, name in UNLISTED:
        assert getattr(internals, name) is getattr(importlib.import_module(module), name)


def test_store_overrides_only_methods_of_the_base_store():
    """A method xarray renames in its store protocol would silently stop being called."""
    base = internals.WritableCFDataStore
    assert issubclass(ZTensorStore, base)
    for method in (
        "encode",
        "encode_variable",
        "encode_attribute",
        "store",
        "set_attributes",
        "set_variables",
        "set_dimension",
        "get_variables",
        "get_attrs",
        "get_dimensions",
        "get_encoding",
        "close",
    ):
        assert callable(getattr(base, method, None)), f"xarray's store lost {method!r}"


def test_what_the_unlisted_names_do():
    """The behaviour the backend relies on, checked against xarray directly."""
    text = xr.Variable("x", np.array(["ab", "c"]))
    encoded = internals.EncodedStringCoder(allows_unicode=False).encode(text, name="t")
    chars = internals.CharacterArrayCoder().encode(encoded, name="t")
    assert chars.dtype == np.dtype("S1") and chars.shape == (2, 2)
    ds = xr.Dataset({"v": ("x", [1, 2])}, coords={"aux": ("x", [3, 4])})
    variables, _ = internals.encode_dataset_coordinates(ds)
    assert variables["v"].attrs["coordinates"] == "aux"
    assert internals.DATAARRAY_VARIABLE == "__xarray_dataarray_variable__"
    assert isinstance(internals.NONE_VAR_NAME, str) and internals.NONE_VAR_NAME

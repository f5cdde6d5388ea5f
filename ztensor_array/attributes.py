"""Global attributes: text values are stored as they are; anything else goes under one
reserved text key as base64-encoded CBOR, because the reference 1.1.1 reader refuses a file
whose root attributes are not all text. Object attributes hold any CBOR value directly.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import cbor2

from .errors import ArgumentTypeError, FormatError, ZTensorError

RESERVED_KEY = "__ztensor_array_cbor__"


def private_copy(value: Any) -> Any:
    """A copy of decoded CBOR that shares nothing mutable with it (maps, arrays, sets and tag
    contents are copied; scalars are immutable). Decoded manifests are shared by every reader
    of a file, so attributes leave the library as private copies. ``copy.deepcopy`` cannot
    be used: cbor2's simple values refuse to be copied."""
    if isinstance(value, dict):
        return {k: private_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [private_copy(v) for v in value]
    if isinstance(value, set):
        return {private_copy(v) for v in value}
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, private_copy(value.value))
    return value


def as_mapping(attributes: Any, path=None, obj=None) -> dict[str, Any]:
    """A copy of user attributes, which must be a mapping (of text to values)."""
    if not isinstance(attributes, Mapping):
        raise ArgumentTypeError(
            f"attributes must be a mapping, not {type(attributes).__name__}", path=path, obj=obj
        )
    return dict(attributes)


def encode_root(attributes: Mapping[str, Any] | None, path=None) -> dict[str, str] | None:
    """Root attributes in a form every 1.x reader accepts (text -> text)."""
    if not attributes:
        return None
    attributes = as_mapping(attributes, path)
    text: dict[str, str] = {}
    other: dict[str, Any] = {}
    for key, value in attributes.items():
        if not isinstance(key, str):
            raise ZTensorError(f"attribute names must be text, got {key!r}", path=path)
        if key == RESERVED_KEY:
            raise ZTensorError(f"attribute name {RESERVED_KEY!r} is reserved", path=path)
        if isinstance(value, str):
            text[key] = value
        else:
            other[key] = value
    if other:
        try:
            packed = cbor2.dumps(other)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise ZTensorError(f"attributes cannot be encoded as CBOR: {exc}", path=path) from None
        text[RESERVED_KEY] = base64.b64encode(packed).decode("ascii")
    return text


def check_object(attributes: Mapping[str, Any] | None, path=None, obj=None) -> dict | None:
    """Object attributes as written: text names (1.1.1 refuses the whole file otherwise)
    and CBOR-encodable values, checked when the object is added rather than at finalize."""
    if not attributes:
        return None
    out = as_mapping(attributes, path, obj)
    for key in out:
        if not isinstance(key, str):
            raise ZTensorError(f"attribute names must be text, got {key!r}", path=path, obj=obj)
    try:
        cbor2.dumps(out)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ZTensorError(
            f"attributes cannot be encoded as CBOR: {exc}", path=path, obj=obj
        ) from None
    return out


def decode_root(stored: Mapping[str, Any] | None, path=None) -> dict[str, Any]:
    """The user's view of stored root attributes (inverse of ``encode_root``)."""
    if not stored:
        return {}
    out = {k: v for k, v in stored.items() if k != RESERVED_KEY}
    packed = stored.get(RESERVED_KEY)
    if packed is not None:
        try:
            extra = cbor2.loads(base64.b64decode(packed, validate=True))
        except Exception as exc:  # any corruption of the reserved key is a format error
            raise FormatError(
                f"reserved attribute {RESERVED_KEY!r} is corrupt ({exc})", path=path
            ) from None
        if not isinstance(extra, Mapping):
            raise FormatError(f"reserved attribute {RESERVED_KEY!r} is not a map", path=path)
        out.update(extra)
    return out

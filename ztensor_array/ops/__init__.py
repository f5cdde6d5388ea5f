"""Operations on .zt files, one module each: ``inspect`` (describe, for ``ztensor info``),
``verify``, ``repair``, ``compact``, ``rewrite`` (compress/decompress), ``merge`` and
``migrate`` (legacy v0.1 to v1.1); ``base`` holds what they share with their callers.

Nothing is imported here, so ``import ztensor_array.ops.repair`` loads only what repair needs.
"""

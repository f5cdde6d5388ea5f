"""Dask arrays over .zt files, and parallel writes of Dask (or numpy) arrays into them.

``read``: ``from_ztensor``, built like ``da.from_zarr`` (tasks read through the Reader).
``write``: ``write_arrays``, one dataclass per array, tasks that write blocks or chunks
through the multi-process protocol of ``ztensor_array.parallel``. ``deferred``: the Delayed
of ``compute=False`` writes and their clean-up; ``watch``: the ``distributed`` scheduler
plugin that undoes failed deferred writes.
"""

from __future__ import annotations

from .read import TensorSource, from_ztensor
from .write import write_arrays

__all__ = ["TensorSource", "from_ztensor", "write_arrays"]

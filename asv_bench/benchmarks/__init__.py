"""asv benchmarks of ztensor_array, one module per area (format, dask, xarray, convert, memory)."""

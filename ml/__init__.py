"""Pure numpy/numba learning code: models, tasks, codecs, checks, aggregation.

No I/O of its own: callers pass data, keys and seeds in.
"""

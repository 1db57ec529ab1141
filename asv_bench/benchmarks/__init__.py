"""asv benchmarks for nquant.

Run from ``asv_bench/`` with threads pinned, e.g.::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=2 asv continuous --factor 1.5 main HEAD

``tests/test_asv.py`` runs every benchmark once on tiny data so they cannot rot.
"""

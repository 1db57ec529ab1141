"""Slow, obviously correct NumPy references the kernels and families are tested against.

One module per kernel: ``tests/reference/X.py`` is the reference of ``nquant/kernels/X.py``, and
``tests/test_X.py`` (or test functions ``test_X_*``) compares them; ``asv_bench/benchmarks/kernels.py``
times the kernel in the class ``CamelCase(X)``.  A module named after a family or an nquant module
(``uniform``, ``codebook``, ``qat``, ``adaptive``) holds that level's references and imports the
kernel-level ones it builds on.  ``tests/test_lint.py`` checks the rule.
"""

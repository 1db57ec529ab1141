"""Codebook construction: optimal 1-D levels (exact k-means, ASQ solvers)."""

"""Interface support: the ``nquant`` command line, workflows and their jobs, sources, reports and
figures, scheme presets, progress bars and cluster set-up."""

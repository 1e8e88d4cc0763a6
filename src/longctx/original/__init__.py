"""The original studies' published measurements, carried into the project as data with their sources.

Each file here names the original file (repository, commit, path) every figure comes from; the claims
check, the paper's comparison columns and ``longctx predict --compare-original`` read them. Nothing here is
measured by this artifact.
"""

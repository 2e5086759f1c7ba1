"""Tools that check the kernels against the models (they import both, so they sit above both).

    python -m avfast.checks.aot    # every Triton launch of the preset models, compiled for sm_80/86/89/90
"""

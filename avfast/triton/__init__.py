"""Triton kernels, one file per op. Import a submodule only when Triton is wanted: the
interpreter (TRITON_INTERPRET=1) must be chosen before `import triton`.

Each kernel file exports `forward`/`backward` host functions that launch through
`_common.launch`, so `python -m avfast.checks.aot` (run by tests/test_aot_compile.py) can record the
launches the op layer makes for the model's shapes and compile exactly those specialisations for
sm_80/86/89/90, checking shared memory and spills.
"""

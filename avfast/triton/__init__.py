"""Triton kernels, one file per op. Import a submodule only when Triton is wanted: the
interpreter (TRITON_INTERPRET=1) must be chosen before `import triton`.

Each kernel file exports `forward`/`backward` host functions and `aot_specs()`: every
(kernel, signature, constexprs, num_warps) configuration its launchers can use, which
tests/test_aot_compile.py compiles for sm_80/86/89/90 and checks for shared memory and spills.
"""

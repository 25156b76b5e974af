"""Test-session set-up shared by every test module."""

import os

# Triton decides at import time whether its library functions run in the CPU
# interpreter, so this must happen before any test imports triton. CI has no GPU;
# the triton backend's kernels are checked in the interpreter on small shapes.
os.environ.setdefault("TRITON_INTERPRET", "1")

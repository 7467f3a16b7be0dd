"""Test-wide settings: compiled code is cached in a temporary directory, never in the
user's cache."""

import os
import tempfile

os.environ.setdefault("SYMGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="symgrad-test-cache-"))

# CI runs the same hypothesis examples every time (a red build is reproducible); locally the
# default profile keeps exploring.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# -- every backend, for tests that run one graph on each ---------------------------------
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "cuda"))
from emulated_driver import EmulatedDriver, gxx_available  # noqa: E402

ALL_BACKENDS = ["llvm", "numpy", pytest.param("cuda", marks=pytest.mark.skipif(
    not gxx_available(), reason="the CUDA emulator needs g++ with -std=c++20"))]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each backend in turn; ``cuda`` runs on the CPU emulator (tests/cuda)."""
    from symgrad.runtime import cuda_driver

    if request.param == "cuda":
        cuda_driver.set_driver(EmulatedDriver())
        yield "cuda"
        cuda_driver.set_driver(None)
    else:
        yield request.param

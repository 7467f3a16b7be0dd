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

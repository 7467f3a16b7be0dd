"""Test-wide settings: compiled code is cached in a temporary directory, never in the
user's cache."""

import os
import tempfile

os.environ.setdefault("SYMGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="symgrad-test-cache-"))

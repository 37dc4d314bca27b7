"""Test-wide settings: the hypothesis profiles.

``ci`` (hypothesis's defaults, more examples) runs where ``CI=true`` is set;
``dev`` (few examples) runs locally. ``HYPOTHESIS_PROFILE`` picks one by name.
Tests whose ``@settings`` name their own ``max_examples`` keep it in both.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
)

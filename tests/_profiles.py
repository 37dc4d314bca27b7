"""The hypothesis profiles, and `examples`: a test's own number of examples, scaled to the profile.

``ci`` (hypothesis's defaults, more examples) runs where ``CI=true`` is set; ``dev`` (a tenth as
many) runs locally; ``HYPOTHESIS_PROFILE`` picks one by name. ``tests/conftest.py`` loads one.

A test that wants more (or fewer) examples than the profile's default names its number for CI
through `examples`, so that it scales with the profile like every other property test::

    @settings(max_examples=examples(500), deadline=None)  # 500 in CI, 50 locally
"""

from __future__ import annotations

import os

from hypothesis import settings

__all__ = ["CI_EXAMPLES", "examples", "load_profile"]

CI_EXAMPLES = 200
DEV_EXAMPLES = 20

settings.register_profile("ci", max_examples=CI_EXAMPLES, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=DEV_EXAMPLES, deadline=None)


def load_profile() -> str:
    """Load the profile this run asks for (``HYPOTHESIS_PROFILE``, else by ``CI``); its name."""
    name = os.environ.get("HYPOTHESIS_PROFILE") or (
        "ci" if os.environ.get("CI", "").lower() == "true" else "dev"
    )
    settings.load_profile(name)
    return name


def examples(in_ci: int) -> int:
    """``in_ci`` under the ``ci`` profile; in the loaded profile, as many in proportion.

    The proportion is the loaded profile's ``max_examples`` to the ``ci`` one's (``dev``: a
    tenth), at least one example.
    """
    return max(1, in_ci * settings().max_examples // CI_EXAMPLES)

"""Test-wide settings: the hypothesis profiles (``tests/_profiles.py``).

``ci`` (hypothesis's defaults, more examples) runs where ``CI=true`` is set;
``dev`` (a tenth as many) runs locally. ``HYPOTHESIS_PROFILE`` picks one by name.
Tests that need their own number of examples write it for CI as
``max_examples=examples(N)``, which scales it with the loaded profile.
"""

from __future__ import annotations

from _profiles import load_profile

load_profile()

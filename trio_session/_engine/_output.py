"""Typed output in the tick loop: how the model is asked, and what its final answer gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import InvalidOutput
from .._messages import Message
from .._output import OutputSpec
from ..models._base import Model, ModelRequest
from ._tick import Tick
from ._transcript import Transcript

__all__ = ["ask_for_output", "check_output"]


def ask_for_output(spec: OutputSpec, model: Model, request: ModelRequest) -> ModelRequest:
    """``request`` asking for the typed output: natively when the model can, else by instruction.

    A model asks natively through ``output_settings(name, schema) -> settings | None`` (the
    provider adapters have it); the settings join the request's, whose own keys win.
    """
    native = getattr(model, "output_settings", None)
    asked = native(spec.name, spec.schema) if callable(native) else None
    if asked:
        settings = dict(request.settings)
        for key, value in asked.items():
            mine = settings.get(key)
            if isinstance(mine, Mapping) and isinstance(value, Mapping):
                # The user's own keys (an Anthropic output_config's effort) are kept.
                settings[key] = {**value, **mine}
            elif key not in settings:
                settings[key] = value
        return attrs.evolve(request, settings=settings)
    instructions = spec.instructions()
    system = f"{request.system}\n\n{instructions}" if request.system else instructions
    return attrs.evolve(request, system=system)


def check_output(
    spec: OutputSpec, state: Tick, transcript: Transcript, corrected: bool
) -> tuple[Any, bool]:
    """The typed output of the tick that ends the execution, and whether to ask again.

    An invalid first answer is answered with the problems (a committed user message) and
    the caller runs one more tick.

    Raises:
        InvalidOutput: The answer is invalid and was corrected once already, or the
            execution stopped (``max_ticks``) while the model was still calling tools.
    """
    if state.calls:
        raise InvalidOutput(
            [f"the execution stopped after tick {state.number}, before a final answer"]
        )
    assert state.message is not None
    value, errors = spec.parse(state.message.text)
    if not errors:
        return value, False
    if corrected:
        raise InvalidOutput(errors)
    transcript.commit(
        Message("user", spec.correction(errors), metadata={"trio_session": "output_correction"})
    )
    return None, True

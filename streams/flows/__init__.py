"""One module per agent; each exposes `register(ctx)`, which declares its agents, timers and
tasks on `ctx.app` (nothing is declared at import)."""

from __future__ import annotations

from ..context import AppContext
from . import (
    feedback,
    healing,
    inference,
    intake,
    learner,
    quarantine,
    registry,
    rotation,
    shadow,
    sink,
)

# The order the agents, timers and tasks were declared in when importing declared them.
# router has no agent of its own: intake routes in its hop (streams/flows/router.py says why).
MODULES = (feedback, healing, quarantine, inference, intake, registry, rotation, shadow, sink,
           learner)


def register(ctx: AppContext) -> None:
    for module in MODULES:
        module.register(ctx)

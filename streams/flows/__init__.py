"""One module per agent; each exposes `register(ctx)`, which declares its agents, timers and
tasks on `ctx.app` (nothing is declared at import)."""

from __future__ import annotations

from ..context import AppContext
from . import (
    feedback,
    healing,
    hops,
    inference,
    intake,
    learner,
    quarantine,
    registry,
    results,
    rotation,
    shadow,
    sink,
)

# The order the agents, timers and tasks were declared in when importing declared them.
# router has no agent of its own: intake routes in its hop (streams/flows/router.py says why);
# shadow and quarantine read `results` through one agent, results (streams/flows/results.py);
# hops feeds inference and results from one consumer group of their own.
MODULES = (feedback, healing, quarantine, inference, intake, registry, results, rotation, shadow,
           sink, learner, hops)


def register(ctx: AppContext) -> None:
    for module in MODULES:
        module.register(ctx)

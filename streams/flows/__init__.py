"""One module per agent; importing this package registers every agent with the app."""

from . import (  # noqa: F401
    feedback,
    findings,
    healing,
    inference,
    intake,
    quarantine,
    registry,
    rotation,
    router,
    shadow,
    sink,
)

"""Moved to the `agents.backends.litellm` package; this name stays for old imports."""

from .litellm import *  # noqa: F403
from .litellm import __all__  # noqa: F401

"""What the entry points share: user errors end the run with their message, not a traceback, and
third-party noise stays off the terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.quiet import quiet_third_party

log = logging.getLogger("implicit_deepfake")


def guarded(stage: Callable[..., Any], *args: Any) -> Any:
    """Run `stage(*args)`; a DeepfakeError is logged and exits with status 1."""
    quiet_third_party()
    try:
        return stage(*args)
    except DeepfakeError as err:
        log.error("%s", err)
        sys.exit(1)

"""What the entry points share: user errors end the run with their message, not a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from implicit_deepfake.errors import DeepfakeError

log = logging.getLogger("implicit_deepfake")


def guarded(stage: Callable[..., Any], *args: Any) -> Any:
    """Run `stage(*args)`; a DeepfakeError is logged and exits with status 1."""
    try:
        return stage(*args)
    except DeepfakeError as err:
        log.error("%s", err)
        sys.exit(1)

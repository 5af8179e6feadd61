"""Errors about input files, shared by the core (model files) and the adapters (estimator files)."""
from __future__ import annotations

import re

__all__ = ["AdapterError", "brief"]


class AdapterError(ValueError):
    """An input file (an estimator's output, a model file) does not have the documented format;
    the message says what is wrong. ``adapters.AdapterError`` is this class."""


def brief(e: BaseException) -> str:
    """An exception as one short line for a message: library errors can span lines (torch's
    weights_only advice) or quote kilobytes of the file (pickle)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())   # no terminal colour codes either
    return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"

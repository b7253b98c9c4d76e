"""Warnings raised inside a test process, carried to pytest's warnings summary.

The same fields pytest-xdist carries: the message text, the category (by import
path, falling back to ``UserWarning`` for one that cannot be imported), where it
was raised.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def serialize_warning(message: warnings.WarningMessage) -> dict[str, Any]:
    category = message.category
    return {
        "message": str(message.message),
        "category_module": category.__module__,
        "category_name": category.__qualname__,
        "filename": message.filename,
        "lineno": message.lineno,
        "line": message.line,
    }


def _category(module: str, name: str) -> type[Warning]:
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return UserWarning
    if isinstance(obj, type) and issubclass(obj, Warning):
        return obj
    return UserWarning


def rebuild_warning(data: dict[str, Any]) -> warnings.WarningMessage:
    category = _category(data["category_module"], data["category_name"])
    try:
        message: Warning | str = category(data["message"])
    except Exception:  # noqa: BLE001 - a category with an unusual constructor
        message = data["message"]
    return warnings.WarningMessage(
        message, category, data["filename"], data["lineno"], line=data.get("line")
    )

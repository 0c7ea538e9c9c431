"""Importing operators' code named on the command line as ``module:attribute``.

``--shell mymodule:shell`` and ``--protocol mymodule:Class`` import from the
current directory, as uvicorn and gunicorn do. That directory never shadows
shardd's own top-level packages, though: a project with a ``workers/``
folder of its own still runs on ours. The current directory is therefore
searched last (``shardd/__main__.py`` takes it off the front of ``sys.path``
where ``python -m`` put it), after shardd's packages are already imported.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

OWN_PACKAGES = ("shardd", "workers")


def _search_current_directory_last() -> None:
    cwd = os.getcwd()
    if not any(os.path.abspath(entry or ".") == cwd for entry in sys.path):
        sys.path.append(cwd)


def _shadowed_here() -> list[str]:
    """Own package names that a folder in the current directory would have shadowed."""
    return [
        name
        for name in OWN_PACKAGES
        if os.path.isdir(name) and os.path.realpath(name) != os.path.realpath(_own_directory(name))
    ]


def _own_directory(package: str) -> str:
    module = sys.modules.get(package)
    return os.path.dirname(getattr(module, "__file__", "") or "") or ""


def load(spec: str, builtins: dict[str, Any], what: str) -> Any:
    """The object ``spec`` names: a key of ``builtins`` or ``module:attr.path``.

    ValueError, with one line saying why, if it cannot be imported or found or
    is not callable.
    """
    if spec in builtins:
        return builtins[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        names = "|".join(builtins)
        choices = f"one of {names} or module:callable" if names else "module:callable"
        raise ValueError(f"{what} must be {choices}, not {spec!r}")
    _search_current_directory_last()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        hint = (
            f" (./{missing} here is not imported: shardd's own {missing} package comes first)"
            if missing in _shadowed_here()
            else ""
        )
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}{hint}") from None
    except Exception as exc:  # the module itself failed as it ran: one line says where
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise ValueError(
            f"{what} {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc} "
            f"(at {frame.filename}:{frame.lineno})"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {spec!r}: {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{what} {spec!r} is not callable")
    return obj

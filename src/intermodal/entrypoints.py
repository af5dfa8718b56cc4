"""The user's code by name: the one place an entrypoint of a config (``package.module:name``:
``model.factory``, ``model.preprocess``) becomes a Python object. Imports nothing heavy, so the
tasks that read rows through ``model.preprocess`` do not pay for torch."""

from __future__ import annotations

import importlib
from typing import Any


def import_entrypoint(entrypoint: str, setting: str = "model.factory") -> Any:
    """The object named ``package.module:name``; only that module is imported. Errors name the
    config ``setting`` the entrypoint came from."""
    module_name, _, attribute = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"{setting} '{entrypoint}': cannot import '{module_name}': {error}. The module "
            "must be importable by the driver and by every Ray worker: install it as a package "
            "(on every node of a cluster), or put its directory on PYTHONPATH before the run "
            "starts"
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(
            f"{setting} '{entrypoint}': '{module_name}' has no '{attribute}'"
        ) from None

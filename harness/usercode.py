"""Import the user's own modules (custom layers, losses, objects) by file path.

Run in every process that saves or loads a model with `code` in its model options, after the
runtime's import and before the load clock (`user_code_import_s` is recorded apart). Nothing is
installed: each module is imported from its path (`import_user_code`).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import time
from typing import Any


def import_user_code(paths: list[str]) -> tuple[dict[str, Any], float]:
    """(custom objects by name, seconds the imports took) for the modules at `paths`.

    Each module is registered under its file's stem, so a Keras 3 config naming `module:
    "my_layers"` resolves to it, and its folder goes on `sys.path`, so it may import its
    siblings (the docker backend mounts only the modules given: give every module the code
    imports). Its classes and functions become the `custom_objects` of H5 / Keras loads; what it
    registers with `register_keras_serializable` resolves through Keras's registry as well.
    """
    began = time.perf_counter()
    objects: dict[str, Any] = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"code {path}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        objects.update(
            {
                key: value
                for key, value in vars(module).items()
                if not key.startswith("_")
                and (inspect.isclass(value) or inspect.isfunction(value))
                and getattr(value, "__module__", "") == name
            }
        )
    return objects, time.perf_counter() - began

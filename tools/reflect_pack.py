"""The pack as ComfyUI imports it, for the tests, the lab, the benchmarks and
the tools (stdlib only).

ComfyUI loads a custom node folder as a package from its ``__init__.py``
(``nodes.load_custom_node``), under a module name made of the folder's path,
so the pack's own ``samplers/`` and ``nodes/`` are never top-level modules
(where ComfyUI's ``comfy/samplers.py`` and ``nodes.py`` would shadow them, or
they ComfyUI's). ``module("samplers.zigzag")`` imports a submodule of the
package loaded that same way; a copy ComfyUI already loaded from this folder
(through any link) is reused, so host tests and ComfyUI share one set of classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INIT = os.path.join(ROOT, "__init__.py")


def _loaded():
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and os.path.realpath(f) == os.path.realpath(_INIT):
            return mod
    return None


def package():
    """The pack's package module (loaded as ComfyUI's load_custom_node does)."""
    mod = _loaded()
    if mod is not None:
        return mod
    name = ROOT.replace(".", "_x_")  # ComfyUI's sys.modules name for a custom node folder
    spec = importlib.util.spec_from_file_location(name, _INIT, submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def module(name: str):
    """A submodule of the pack, e.g. ``module("samplers.zigzag")``."""
    return importlib.import_module(f"{package().__name__}.{name}")

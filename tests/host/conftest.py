"""Fixtures of the host tests (tests that run the pack inside a real ComfyUI).

Without COMFYUI_PATH every test under tests/host is skipped (reason shown
with ``-rs``). With it, ComfyUI is set up in-process when this conftest is
imported (so test modules may ``import comfy`` / ``import nodes`` at top
level) and the fixtures below are available. See hostlib.py for the helpers.

Fixtures (all session-scoped):
    comfy_env      hostlib.ComfyEnv (path, version, base_dir, device, args)
    reflect_pack   the pack's package module as ComfyUI imported it
    reflect_nodes  {node_id: node class} ComfyUI registered for the pack
    testnodes      the test node pack module (reflect_testnodes) loaded by ComfyUI
    tiny_model     factory (family="sd15", prediction="eps", seed=0, **kw) -> MODEL, cached per arguments
    comfy_server   a started hostlib.ComfyServer with the pack + test nodes (stopped at session end)

Environment: COMFYUI_PATH (required), REFLECT_HOST_SERVER_TIMEOUT (start-up
wait, default 120 s), REFLECT_HOST_COPY_PACK=1 (copy the pack into the
server's custom_nodes instead of symlinking it), REFLECT_HOST_KEEP=1 (keep
the in-process base dir).
"""

import os
import sys

import pytest

import hostlib

_HOST_DIR = os.path.dirname(os.path.abspath(__file__))

_BOOT_ERROR = None
if hostlib.comfyui_path() is not None:
    try:
        hostlib.bootstrap_comfy()
    except Exception as e:  # e.g. the wrong Python (no ComfyUI requirements): fail host tests, not the session
        _BOOT_ERROR = e


def pytest_collection_modifyitems(config, items):
    if hostlib.comfyui_path() is not None:
        return
    skip = pytest.mark.skip(reason=hostlib.SKIP_REASON)
    for item in items:
        if os.path.abspath(str(item.fspath)).startswith(_HOST_DIR + os.sep):
            item.add_marker(skip)


def pytest_report_header(config):
    p = hostlib.comfyui_path()
    if p is None:
        return f"host tests: {hostlib.SKIP_REASON}"
    return f"host tests: ComfyUI {hostlib.comfyui_version(p)} at {p}"


@pytest.fixture(scope="session")
def comfy_env():
    hostlib.require_comfyui()
    if _BOOT_ERROR is not None:
        raise RuntimeError(f"cannot set up ComfyUI from {hostlib.ENV_VAR}={hostlib.comfyui_path()} "
                           f"with {sys.executable}: {_BOOT_ERROR!r}") from _BOOT_ERROR
    return hostlib.bootstrap_comfy()


@pytest.fixture(scope="session")
def reflect_pack(comfy_env):
    return hostlib.load_pack()


@pytest.fixture(scope="session")
def reflect_nodes(reflect_pack):
    return hostlib.pack_nodes()


@pytest.fixture(scope="session")
def Z(reflect_pack):
    """nodes/zigzag.py as ComfyUI loaded it."""
    return reflect_pack.nodes.zigzag


@pytest.fixture(scope="session")
def W(reflect_pack):
    """nodes/w2sd.py as ComfyUI loaded it."""
    return reflect_pack.nodes.w2sd


@pytest.fixture(scope="session")
def S(reflect_pack):
    """nodes/swg.py as ComfyUI loaded it."""
    return reflect_pack.nodes.swg


@pytest.fixture(scope="session")
def M(comfy_env):
    """ComfyUI's node classes, comfy_extras included (SamplerCustomAdvanced, CFGGuider, PAG, ...)."""
    hostlib.init_builtin_nodes()
    import nodes
    return nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="session")
def testnodes(comfy_env):
    return hostlib.load_testnodes()


@pytest.fixture(scope="session")
def tiny_model(comfy_env):
    cache = {}

    def make(family="sd15", prediction="eps", seed=0, **kw):
        key = (family, prediction, seed, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = hostlib.build_model(family, prediction, seed, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def comfy_server(comfy_env):
    srv = hostlib.ComfyServer(copy_pack=bool(os.environ.get("REFLECT_HOST_COPY_PACK")))
    try:
        srv.start(timeout=float(os.environ.get("REFLECT_HOST_SERVER_TIMEOUT", "120")))
    except Exception:
        srv.cleanup()
        raise
    yield srv
    srv.cleanup()

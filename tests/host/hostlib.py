"""Host-test harness: run ComfyUI-Reflect inside a real ComfyUI checkout.

The checkout is found through the environment variable ``COMFYUI_PATH`` (a
ComfyUI source tree with its requirements installed in the running Python).
Nothing of ComfyUI is copied or installed: it is imported from that path
(in-process helpers) or started as ``python main.py`` (``ComfyServer``).

Importing this module has no side effects and needs only the standard
library; ComfyUI is set up by ``bootstrap_comfy()`` (alias ``setup_comfy()``).

In-process:
    bootstrap_comfy(...) / setup_comfy(cpu=True) -> ComfyEnv
    load_pack() -> the pack's module, imported by ComfyUI's own nodes.load_custom_node()
    pack_nodes() -> {node_id: node class} as ComfyUI registered them
    build_model(family, prediction, seed, ...) / conditioning(model, ...) -> MODEL / CONDITIONING
    build_family(family, seed) / family_conditioning(family, ...) / family_latent(family, ...): MODEL_FAMILIES
    run_node(node_cls, **inputs) -> output tuple (V1 or V3 node)
Server:
    ComfyServer(...).start() ... .queue_prompt(graph) / .wait_for_prompt(prompt_id) ... .stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HOST_DIR = Path(__file__).resolve().parent
REPO_ROOT = HOST_DIR.parents[1]
TESTNODES_DIR = HOST_DIR / "reflect_testnodes"
PACK_DIRNAME = "ComfyUI-Reflect"          # folder name the pack gets in custom_nodes
TESTNODES_DIRNAME = "reflect_testnodes"
ENV_VAR = "COMFYUI_PATH"
SKIP_REASON = f"{ENV_VAR} not set: host tests need a ComfyUI checkout (COMFYUI_PATH=/path/to/ComfyUI)"

# tiny.py is also the test node pack's module; make it importable here as `reflect_testnodes.tiny`
if str(HOST_DIR) not in sys.path:
    sys.path.insert(0, str(HOST_DIR))


# --------------------------------------------------------------------------- discovery

def comfyui_path() -> Path | None:
    """The ComfyUI checkout named by COMFYUI_PATH, or None when unset."""
    p = os.environ.get(ENV_VAR, "").strip()
    return Path(p).expanduser().resolve() if p else None


def require_comfyui() -> Path:
    """COMFYUI_PATH, or pytest.skip (module level allowed) when it is unset.
    Raises when it is set but does not look like a ComfyUI checkout."""
    p = comfyui_path()
    if p is None:
        import pytest

        pytest.skip(SKIP_REASON, allow_module_level=True)
    if not (p / "main.py").is_file() or not (p / "comfy").is_dir() or not (p / "nodes.py").is_file():
        raise RuntimeError(f"{ENV_VAR}={p} is not a ComfyUI checkout (main.py, nodes.py, comfy/ expected)")
    return p


def comfyui_version(path: Path | None = None) -> str:
    """ComfyUI's version string read from comfyui_version.py (no import)."""
    path = path or require_comfyui()
    ns: dict = {}
    vf = Path(path) / "comfyui_version.py"
    if vf.is_file():
        exec(vf.read_text(), ns)
    return ns.get("__version__", "unknown")


def version_tuple(v: str) -> tuple:
    out = []
    for part in v.split("."):
        num = "".join(ch for ch in part if ch.isdigit())
        out.append(int(num) if num else 0)
    return tuple(out)


# --------------------------------------------------------------------------- in-process ComfyUI

@dataclasses.dataclass
class ComfyEnv:
    path: Path           # the ComfyUI checkout
    version: str         # ComfyUI's version
    base_dir: Path       # --base-directory of this process (models, custom_nodes, input, output, temp, user)
    device: str          # torch device models run on
    args: object         # comfy.cli_args.args

    def __getitem__(self, key):  # env["version"] works as well as env.version
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)


_ENV: ComfyEnv | None = None


def _check_nodes_not_shadowed(comfy_path: Path):
    mod = sys.modules.get("nodes")
    if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve() != (comfy_path / "nodes.py").resolve():
        raise RuntimeError(
            f"`nodes` is already imported from {getattr(mod, '__file__', mod)!r}, not ComfyUI's nodes.py. The pack's "
            "own nodes/ package shadows ComfyUI's `nodes` module when imported top-level (`import nodes.zigzag`) "
            "with the repo root on sys.path; host tests must import the pack through load_pack() instead.")


def bootstrap_comfy(comfy_path: str | os.PathLike | None = None, base_dir: str | os.PathLike | None = None,
                    cpu: bool = True, extra_args: list[str] | tuple = ()) -> ComfyEnv:
    """Make ComfyUI importable in this process (``comfy``, ``nodes``,
    ``folder_paths``, ``comfy_api.latest``, ``comfy_extras``) as ``main.py``
    would set it up, without consuming this process's argv.

    ComfyUI's checkout goes first on sys.path (its ``nodes.py``, ``utils/``,
    ``app/`` must win over the pack's ``nodes/`` package). Its CLI arguments
    are parsed from ``["main.py", "--cpu", "--base-directory", base_dir,
    *extra_args]`` (``--cpu`` only when ``cpu``), so models, outputs and
    custom_nodes of this process live in ``base_dir`` (a fresh temp dir by
    default), never in the checkout. Idempotent: later calls return the
    first environment."""
    global _ENV
    if _ENV is not None:
        return _ENV
    path = Path(comfy_path).resolve() if comfy_path is not None else require_comfyui()
    _check_nodes_not_shadowed(path)
    if str(path) in sys.path:
        sys.path.remove(str(path))
    sys.path.insert(0, str(path))
    if base_dir is not None:
        base = Path(base_dir)
    else:
        base = Path(tempfile.mkdtemp(prefix="reflect-host-"))
        if not os.environ.get("REFLECT_HOST_KEEP"):
            import atexit

            atexit.register(shutil.rmtree, base, True)  # custom_nodes entries are symlinks: not followed
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / sub).mkdir(parents=True, exist_ok=True)

    try:
        _ENV = _bootstrap(path, base, cpu, extra_args)
    except BaseException:
        if str(path) in sys.path:
            sys.path.remove(str(path))
        raise
    return _ENV


def _bootstrap(path: Path, base: Path, cpu: bool, extra_args) -> ComfyEnv:
    argv = ["main.py", "--base-directory", str(base), "--disable-api-nodes", *extra_args]
    if cpu:
        argv.insert(1, "--cpu")
    import comfy.options

    saved_argv = sys.argv
    already = "comfy.cli_args" in sys.modules
    sys.argv = argv
    comfy.options.enable_args_parsing(True)
    try:
        import comfy.cli_args
    finally:
        comfy.options.enable_args_parsing(False)
        sys.argv = saved_argv
    args = comfy.cli_args.args
    if already:  # parsed before us (with no argv): apply what matters
        args.cpu = args.cpu or cpu
        args.base_directory = str(base)
    if "comfy.model_management" in sys.modules and cpu:
        import comfy.model_management as mm

        if mm.cpu_state != mm.CPUState.CPU:
            raise RuntimeError("comfy.model_management was imported before bootstrap_comfy(cpu=True)")

    import folder_paths  # noqa: F401  (reads args.base_directory)
    import comfy.model_management
    import nodes  # ComfyUI's nodes.py

    if Path(nodes.__file__).resolve() != (path / "nodes.py").resolve():
        raise RuntimeError(f"imported `nodes` from {nodes.__file__}, expected {path / 'nodes.py'}")
    import comfy_api.latest  # noqa: F401

    import comfy.utils

    if comfy.utils.PROGRESS_BAR_HOOK is None:
        # what ComfyUI's main.py installs in a server: every progress update honours the Cancel flag
        # (0.17 also checks it in every op; 0.3.x only here), so in-process runs interrupt as served ones do
        def progress_hook(value, total, preview_image, prompt_id=None, node_id=None):
            comfy.model_management.throw_exception_if_processing_interrupted()

        comfy.utils.set_progress_bar_global_hook(progress_hook)
    device = str(comfy.model_management.get_torch_device())
    if cpu and device != "cpu":
        raise RuntimeError(f"ComfyUI picked device {device} despite --cpu")
    return ComfyEnv(path=path, version=comfyui_version(path), base_dir=base, device=device, args=args)


def setup_comfy(cpu: bool = True, **kw) -> ComfyEnv:
    """Alias of bootstrap_comfy(cpu=cpu, ...)."""
    return bootstrap_comfy(cpu=cpu, **kw)


def _run_async(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_custom_node_dir(path: str | os.PathLike, module_parent: str = "custom_nodes"):
    """Import a custom node folder exactly as ComfyUI does at start-up, with
    its own ``nodes.load_custom_node()`` (a coroutine in 0.3.x and later), and
    return ``(module, {node_id: node_class})`` of what it registered into
    ``nodes.NODE_CLASS_MAPPINGS``. Raises with ComfyUI's logged traceback
    when ComfyUI reports the import failed."""
    bootstrap_comfy()
    import nodes

    path = str(path)
    before = dict(nodes.NODE_CLASS_MAPPINGS)
    cap = _Capture()
    logging.getLogger().addHandler(cap)
    try:
        res = nodes.load_custom_node(path, module_parent=module_parent)
        ok = _run_async(res) if inspect.isawaitable(res) else res
    finally:
        logging.getLogger().removeHandler(cap)
    if not ok:
        raise RuntimeError(f"ComfyUI failed to load custom node {path}:\n" + "\n".join(cap.messages))
    sys_name = path.replace(".", "_x_") if os.path.isdir(path) else os.path.splitext(path)[0]
    module = sys.modules[sys_name]
    registered = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if before.get(k) is not v}
    return module, registered


_LOADED: dict[str, tuple] = {}


def install_into_custom_nodes(custom_nodes_dir: str | os.PathLike, src: str | os.PathLike, name: str,
                              copy: bool = False) -> Path:
    """Place ``src`` as ``custom_nodes_dir/name`` (a symlink; a copy without
    .git / caches when ``copy``), as a user's install would."""
    dst = Path(custom_nodes_dir) / name
    if dst.is_symlink() or dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.pyc"))
    else:
        os.symlink(Path(src).resolve(), dst, target_is_directory=True)
    return dst


def _load_named(name: str, src: Path):
    if name not in _LOADED:
        env = bootstrap_comfy()
        dst = install_into_custom_nodes(env.base_dir / "custom_nodes", src, name)
        _LOADED[name] = load_custom_node_dir(dst)
    return _LOADED[name]


def submodule(pack, name):
    """The pack's module ``name`` (e.g. "samplers.w2sd"), imported under the pack's ComfyUI module name."""
    import importlib

    return importlib.import_module(f"{pack.__name__}.{name}")


def load_pack():
    """The pack (this repo) imported by ComfyUI as ``custom_nodes/ComfyUI-Reflect``
    of this process's base dir; returns the package module (so
    ``load_pack().nodes.zigzag`` is the pack's nodes/zigzag.py as ComfyUI runs it).
    Cached: ComfyUI imports it once."""
    return _load_named(PACK_DIRNAME, REPO_ROOT)[0]


def pack_nodes() -> dict:
    """{node_id: node class} that ComfyUI registered for the pack."""
    return dict(_load_named(PACK_DIRNAME, REPO_ROOT)[1])


def load_testnodes():
    """The test-only node pack (tests/host/reflect_testnodes) loaded by ComfyUI; returns its module."""
    return _load_named(TESTNODES_DIRNAME, TESTNODES_DIR)[0]


def init_builtin_nodes() -> list:
    """Register ComfyUI's comfy_extras nodes (SamplerCustomAdvanced, ModelSamplingSD3, ...)
    in nodes.NODE_CLASS_MAPPINGS, as start-up does; returns the files that failed to import."""
    bootstrap_comfy()
    import nodes

    if getattr(init_builtin_nodes, "_done", None) is None:
        res = nodes.init_builtin_extra_nodes()
        init_builtin_nodes._done = (_run_async(res) if inspect.isawaitable(res) else res) or []
    return init_builtin_nodes._done


def discover_node_ids(module) -> list[str]:
    """Node ids a custom node module declares, read from the module itself
    (V1 ``NODE_CLASS_MAPPINGS`` or V3 ``comfy_entrypoint()`` -> ``get_node_list()``),
    independent of what ComfyUI registered."""
    return list(discover_node_classes(module))


def discover_node_classes(module) -> dict:
    mapping = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mapping is not None:
        return dict(mapping)
    entry = getattr(module, "comfy_entrypoint", None)
    if entry is None:
        raise RuntimeError(f"{module.__name__} has neither NODE_CLASS_MAPPINGS nor comfy_entrypoint")

    async def collect():
        ext = entry()
        if inspect.isawaitable(ext):
            ext = await ext
        node_list = ext.get_node_list()
        if inspect.isawaitable(node_list):
            node_list = await node_list
        return node_list

    return {cls.GET_SCHEMA().node_id: cls for cls in _run_async(collect())}


def node_input_types(node_cls) -> dict:
    """The V1-style ``INPUT_TYPES()`` dict of a V1 or V3 node class
    (V3 nodes get it from ComfyUI's compatibility layer)."""
    return node_cls.INPUT_TYPES()


def node_input_names(node_cls) -> dict[str, list[str]]:
    """{"required": [...], "optional": [...]} input names of a node class."""
    it = node_input_types(node_cls)
    return {sec: list((it.get(sec) or {}).keys()) for sec in ("required", "optional")}


def is_v3(node_cls) -> bool:
    return hasattr(node_cls, "define_schema") and hasattr(node_cls, "GET_SCHEMA")


def run_node(node_cls, **inputs) -> tuple:
    """Execute a node class directly with the given inputs (no graph) and
    return its outputs as a tuple. V3: ``execute`` (async ones are awaited);
    V1: ``getattr(node_cls(), FUNCTION)``; a {"result": ...} dict is unwrapped."""
    if is_v3(node_cls):
        out = node_cls.execute(**inputs)
        if inspect.isawaitable(out):
            out = _run_async(out)
        res = getattr(out, "result", out)
        return tuple(res) if res is not None else ()
    out = getattr(node_cls(), node_cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        out = out.get("result", ())
    return tuple(out)


# --------------------------------------------------------------------------- tiny models

def _tiny():
    bootstrap_comfy()
    from reflect_testnodes import tiny

    return tiny


def build_model(family: str = "sd15", prediction: str = "eps", seed: int = 0, *, full_size: bool = False,
                device: str = "cpu", flow_shift: float = 3.0, **kw):
    """A seeded ComfyUI MODEL (ModelPatcher) of ComfyUI's SD15 / SDXL class.
    Tiny by default (see reflect_testnodes/tiny.py); ``full_size`` uses the real
    unet_config of the family (SD1.5: 860M parameters) with the same seeded
    init. prediction: eps | v_prediction | flow (ModelSamplingSD3 patch, ``flow_shift``)
    | flow_native (ModelType.FLOW). ``device`` is the load device."""
    return _tiny().build_tiny_model(family, prediction, seed, flow_shift=flow_shift, full_size=full_size,
                                    load_device=device, **kw)


def tiny_model(family: str = "sd15", prediction: str = "eps", seed: int = 0, **kw):
    """build_model with the tiny config (alias)."""
    return build_model(family, prediction, seed, **kw)


def conditioning(model_or_family, seed: int = 0, batch: int = 1, **kw) -> list:
    """Seeded random CONDITIONING shaped for the model (see tiny.make_conditioning)."""
    return _tiny().make_conditioning(model_or_family, seed=seed, batch=batch, **kw)


def empty_latent(batch: int = 1, height: int = 32, width: int = 32, seed: int | None = None) -> dict:
    """LATENT dict, latent-space height/width (zeros unless ``seed``)."""
    return _tiny().make_latent(batch, height, width, seed=seed)


def make_lora(model, rank: int = 4, seed: int = 0, **kw) -> dict:
    """A seeded LoRA / LoCon state dict (kohya keys) on every attention and conv layer of ``model``."""
    return _tiny().make_lora(model, rank=rank, seed=seed, **kw)


def merge_lora(model, lora: dict, strength: float) -> None:
    """Merge ``lora`` at ``strength`` into ``model``'s own weights, in place (for an independent model)."""
    return _tiny().merge_lora(model, lora, strength)


def build_vae(seed: int = 0):
    """A seeded tiny ComfyUI VAE (AutoencoderKL layout, 8x downscale, 4 latent channels)."""
    return _tiny().build_tiny_vae(seed=seed)


def build_flux(seed: int = 0):
    """A seeded tiny Flux MODEL (ComfyUI's own Flux transformer, patch size 2, 16 channels)."""
    return _tiny().build_tiny_flux(seed=seed)


def flux_conditioning(seed: int = 0, guidance: float = 3.5, batch: int = 1) -> list:
    """A seeded CONDITIONING for ``build_flux`` models, with Flux's guidance value."""
    c = _tiny().make_conditioning("flux", seed=seed, batch=batch, context_dim=64, pooled_dim=32)
    c[0][1]["guidance"] = guidance
    return c


# The family matrix (tests/host/test_families_host.py): every family ComfyUI 0.3.64 and 0.17 both build.
MODEL_FAMILIES = ("sd15", "sd2_v", "sdxl", "sd3", "flux", "chroma", "lumina2", "qwen_image", "wan21", "ltxv",
                  "hunyuan_video")
FLOW_FAMILIES = ("sd3", "flux", "chroma", "lumina2", "qwen_image", "wan21", "ltxv", "hunyuan_video")
VIDEO_FAMILIES = ("wan21", "ltxv", "hunyuan_video")


def build_family(family: str, seed: int = 0):
    """A tiny seeded MODEL of one of ``MODEL_FAMILIES`` from ComfyUI's own supported_models / model_base
    classes: sd15 (eps), sd2_v (SD20, v-prediction), sdxl, sd3 (MMDiT), flux, chroma, lumina2, qwen_image, wan21
    (text-to-video, latent [B, 16, T, H, W]), ltxv (latent [B, 128, T, H, W]), hunyuan_video
    (latent [B, 16, T, H, W]). See reflect_testnodes/tiny.py."""
    if family not in MODEL_FAMILIES:
        raise ValueError(f"family must be one of {MODEL_FAMILIES}, got {family!r}")
    return _tiny().build_family_model(family, seed)


def family_conditioning(family: str, seed: int = 0, batch: int = 1, tokens: int = 77) -> list:
    """A seeded CONDITIONING with the family's layout (context, pooled output, guidance, frame rate, mask)."""
    return _tiny().family_conditioning(family, seed=seed, batch=batch, tokens=tokens)


def family_latent(family: str, batch: int = 1, height: int = 16, width: int = 16, frames: int = 2,
                  seed: int | None = None) -> dict:
    """A LATENT in the family's format (4-D images, 5-D [B, C, T, H, W] video); zeros unless ``seed``."""
    return _tiny().family_latent(family, batch=batch, height=height, width=width, frames=frames, seed=seed)


def build_controlnet(model, seed: int = 0):
    """A seeded tiny ComfyUI CONTROL_NET matching ``model``'s tiny UNet config."""
    return _tiny().build_tiny_controlnet(model, seed=seed)


def with_model_sampling(model, kind: str, shift: float = 3.0, zsnr: bool = False):
    """Clone of ``model`` with ComfyUI's ModelSamplingSD3 ("flow") or ModelSamplingDiscrete
    ("eps" / "v_prediction") applied."""
    return _tiny().apply_model_sampling(model, kind, shift=shift, zsnr=zsnr)


def ksampler(model, positive, negative, latent: dict, seed: int = 0, steps: int = 20, cfg: float = 5.0,
             sampler_name: str = "euler", scheduler: str = "normal", denoise: float = 1.0) -> dict:
    """ComfyUI's KSampler node path (nodes.common_ksampler); returns the LATENT dict."""
    bootstrap_comfy()
    import nodes

    return nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                 denoise=denoise)[0]


# --------------------------------------------------------------------------- server

def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    pass


def _child_setup():
    """In the server's child process: own process group (stop() signals the
    group), and on Linux die with the test process if it is killed."""
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


class ComfyServer:
    """A real ComfyUI server (``python main.py --cpu``) in an isolated base
    directory, with the pack (and by default the test node pack) installed
    as custom nodes.

        srv = ComfyServer().start()     # or: with ComfyServer() as srv:
        info = srv.object_info()
        pid = srv.queue_prompt(graph)
        entry = srv.wait_for_prompt(pid)   # the /history entry
        srv.stop()

    The base dir (``--base-directory``; a temp dir unless given) gets
    ``custom_nodes/ComfyUI-Reflect`` -> the repo and ``custom_nodes/reflect_testnodes``;
    the sqlite database is put there too (``--database-url``). Nothing is
    written into the ComfyUI checkout by us."""

    def __init__(self, comfy_path: str | os.PathLike | None = None, base_dir: str | os.PathLike | None = None,
                 port: int | None = None, with_testnodes: bool = True, copy_pack: bool = False,
                 extra_args: list[str] | tuple = (), python: str | None = None, env: dict | None = None):
        self.comfy_path = Path(comfy_path).resolve() if comfy_path else require_comfyui()
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="reflect-server-"))
        self.port = port or free_port()
        self.with_testnodes = with_testnodes
        self.copy_pack = copy_pack
        self.extra_args = list(extra_args)
        self.python = python or sys.executable
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "server.log"
        self.client_id = uuid.uuid4().hex
        self.version = comfyui_version(self.comfy_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def custom_nodes_dir(self) -> Path:
        return self.base_dir / "custom_nodes"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def command(self) -> list[str]:
        return [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(self.base_dir),
                "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}",
                "--disable-auto-launch", "--disable-api-nodes", *self.extra_args]

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        install_into_custom_nodes(self.custom_nodes_dir, REPO_ROOT, PACK_DIRNAME, copy=self.copy_pack)
        if self.with_testnodes:
            install_into_custom_nodes(self.custom_nodes_dir, TESTNODES_DIR, TESTNODES_DIRNAME, copy=self.copy_pack)
        env = dict(os.environ if self.env is None else self.env)
        env.update(PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
        env.pop("PYTHONPATH", None)  # ComfyUI's main.py dir is sys.path[0]; keep the repo off its path
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.comfy_path, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_child_setup)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 120.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} before answering\n"
                                  f"--- server log ---\n{self.log_text()}")
            try:
                self.get_json("/object_info", timeout=10)
                return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
                last = e
            time.sleep(0.5)
        raise ServerError(f"ComfyUI did not answer /object_info within {timeout:.0f} s ({last})\n"
                          f"--- server log ---\n{self.log_text()}")

    def log_text(self, tail: int | None = 400) -> str:
        try:
            self._log.flush()
        except Exception:
            pass
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-tail:] if tail else lines)

    def stop(self, timeout: float = 20.0):
        """SIGINT (ComfyUI's clean shutdown), then SIGTERM, then SIGKILL, to this server's process group."""
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def cleanup(self):
        """stop() and delete the base dir when it was a temp dir made by us."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- HTTP
    def request(self, method: str, path: str, payload=None, timeout: float = 30.0):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def get_json(self, path: str, timeout: float = 30.0):
        return self.request("GET", path, timeout=timeout)

    def post_json(self, path: str, payload, timeout: float = 30.0):
        return self.request("POST", path, payload, timeout=timeout)

    def object_info(self, node_id: str | None = None) -> dict:
        if node_id is None:
            return self.get_json("/object_info", timeout=60)
        return self.get_json(f"/object_info/{node_id}")[node_id]

    def queue_prompt(self, graph: dict) -> str:
        """POST /prompt; returns the prompt_id. Raises ServerError with
        ComfyUI's validation errors (node_errors) when it is rejected."""
        try:
            res = self.post_json("/prompt", {"prompt": graph, "client_id": self.client_id})
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            raise ServerError(f"/prompt rejected the graph (HTTP {e.code}): {body}") from None
        if res.get("node_errors"):
            raise ServerError(f"/prompt node errors: {json.dumps(res['node_errors'], indent=1)}")
        return res["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return (self.get_json(f"/history/{prompt_id}") or {}).get(prompt_id)

    def wait_for_prompt(self, prompt_id: str, timeout: float = 300.0, poll: float = 0.25) -> dict:
        """Poll /history/<prompt_id> until the prompt finished; returns its history
        entry ({"status": {...}, "outputs": {...}, ...}). Raises on timeout or
        server death (with the server log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"ComfyUI died while running {prompt_id}\n--- server log ---\n{self.log_text()}")
            h = self.history(prompt_id)
            if h is not None and (h.get("status") or {}).get("completed") is not None:
                st = h["status"]
                if st.get("status_str") in ("success", "error") or st.get("completed"):
                    return h
            time.sleep(poll)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n--- server log ---\n"
                          f"{self.log_text()}")

    def run_prompt(self, graph: dict, timeout: float = 300.0, check: bool = True) -> dict:
        """queue_prompt + wait_for_prompt; with ``check`` raise unless it succeeded."""
        entry = self.wait_for_prompt(self.queue_prompt(graph), timeout=timeout)
        if check:
            assert_prompt_succeeded(entry, self)
        return entry


def prompt_error(entry: dict) -> str | None:
    """None when a /history entry succeeded, else a description of the failure
    (ComfyUI's execution_error message with node and traceback)."""
    st = entry.get("status") or {}
    if st.get("status_str") == "success" and st.get("completed", True):
        return None
    msgs = []
    for m in st.get("messages") or []:
        kind, data = (m[0], m[1]) if isinstance(m, (list, tuple)) and len(m) == 2 else ("?", m)
        if kind in ("execution_error", "execution_interrupted"):
            data = data or {}
            msgs.append(f"{kind} in node {data.get('node_id')} ({data.get('node_type')}): "
                        f"{data.get('exception_type')}: {data.get('exception_message')}\n"
                        + "".join(data.get("traceback") or []))
    return "\n".join(msgs) or f"status {st}"


def assert_prompt_succeeded(entry: dict, server: ComfyServer | None = None):
    err = prompt_error(entry)
    if err is not None:
        log = f"\n--- server log ---\n{server.log_text(150)}" if server is not None else ""
        raise AssertionError(f"prompt failed: {err}{log}")


# --------------------------------------------------------------------------- API-format graphs

def input_spec(info: dict, name: str):
    """(type, options) of an input from an /object_info node entry."""
    for sec in ("required", "optional"):
        spec = (info.get("input", {}).get(sec) or {}).get(name)
        if spec is not None:
            t = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return t, opts
    raise KeyError(name)


def combo_options(info: dict, name: str) -> list | None:
    """Choices of a combo input, in both /object_info formats (V1: [[...], {}], V3: ["COMBO", {"options": [...]}])."""
    t, opts = input_spec(info, name)
    if isinstance(t, list):
        return t
    if t == "COMBO":
        return list(opts.get("options", []))
    return None


def widget_default(info: dict, name: str):
    """The value a frontend would put in a widget input by default, or None for link-only inputs."""
    t, opts = input_spec(info, name)
    choices = combo_options(info, name)
    if choices is not None:
        return opts.get("default", choices[0] if choices else None)
    if t in ("INT", "FLOAT", "BOOLEAN", "STRING"):
        if "default" in opts:
            return opts["default"]
        return {"INT": opts.get("min", 0), "FLOAT": opts.get("min", 0.0), "BOOLEAN": False, "STRING": ""}[t]
    return None


def gate_graph(info: dict, batch_size: int = 1, **gate_inputs) -> dict:
    """An API graph: a tiny SD1.5 student (KSampler, 2 steps, cfg 1) -> tiny VAE decode -> QualityGate ("9")
    with the tiny ImageReward ``tiny_ir.pt`` (write it into the server's models/image_reward first);
    ``gate_inputs`` set the gate's widgets (prompt, threshold, ...)."""
    return {
        "1": {"class_type": "ReflectTestTinyModel", "inputs": {"family": "sd15", "prediction": "eps", "seed": 3,
                                                               "flow_shift": 3.0}},
        "2": api_node(info["ReflectTestConditioning"], "ReflectTestConditioning", {"model": ["1", 0], "seed": 1}),
        "3": api_node(info["ReflectTestConditioning"], "ReflectTestConditioning", {"model": ["1", 0], "seed": 2}),
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch_size}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": 0, "steps": 2, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "ReflectTestTinyVAE", "inputs": {"seed": 0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "ImageRewardLoader", "inputs": {"checkpoint": "tiny_ir.pt", "download": "never"}},
        "9": api_node(info["QualityGate"], "QualityGate", {"image_reward": ["8", 0], "images": ["7", 0], **gate_inputs}),
    }


def api_node(info: dict, class_type: str, overrides: dict | None = None, include_optional: bool = False) -> dict:
    """An API-format node {"class_type", "inputs"} whose widget inputs are filled
    with their schema defaults, then ``overrides`` (links as [node_id, slot]).
    Raises if a required link input is neither overridden nor has a default."""
    overrides = dict(overrides or {})
    inputs = {}
    secs = ("required", "optional") if include_optional else ("required",)
    for sec in secs:
        for name in (info.get("input", {}).get(sec) or {}):
            if name in overrides:
                continue
            v = widget_default(info, name)
            if v is None and sec == "required":
                raise KeyError(f"{class_type}: required input {name!r} needs a link or a value")
            if v is not None:
                inputs[name] = v
    inputs.update(overrides)
    return {"class_type": class_type, "inputs": inputs}


class ProgressProbe:
    """Records ComfyUI's progress-bar updates ``(value, total)`` and raises
    ComfyUI's interrupt flag when the value reaches ``stop_at`` (as the Cancel
    button does). Use with pytest's monkeypatch:
    ``probe = ProgressProbe(monkeypatch)``; ``probe.stop_at = 7``;
    ``probe.values()``; the flag is cleared by ``reset()`` and ``close()``."""

    def __init__(self, monkeypatch):
        import comfy.model_management
        import comfy.utils

        self._mm, self.seen, self.stop_at = comfy.model_management, [], None
        orig = comfy.utils.ProgressBar.update_absolute
        probe = self

        def record(bar, value, total=None, preview=None):
            probe.seen.append((value, total))
            if value == probe.stop_at:
                probe._mm.interrupt_current_processing(True)
            return orig(bar, value, total, preview)

        monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", record)
        self._monkeypatch = monkeypatch

    def values(self):
        return [v for v, _ in self.seen]

    def totals(self):
        return {t for _, t in self.seen}

    def reset(self):
        self._mm.interrupt_current_processing(False)
        self.seen.clear()

    def close(self):
        self._mm.interrupt_current_processing(False)
        self._monkeypatch.undo()

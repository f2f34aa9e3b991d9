"""Test-only ComfyUI custom node pack for ComfyUI-Reflect's host tests.

Lets API-format graphs run with no checkpoint and no CLIP:

* ``ReflectTestTinyModel``   -> MODEL: tiny seeded SD1.5 / SDXL UNet (eps, v_prediction, flow, flow_native),
  or any family of tiny.ALL_FAMILIES (SD2-v, SD3, Flux, Lumina 2, Qwen-Image, Wan 2.1, LTXV)
* ``ReflectTestTinyVAE``     -> VAE: tiny seeded AutoencoderKL (8x, 4 channels; 16 for family flux) or
  ComfyUI's Wan 2.1 video VAE (family wan21)
* ``ReflectTestTinyControlNet`` -> CONTROL_NET: tiny seeded ControlNet for the tiny model of a family
* ``ReflectTestLatent``      -> LATENT of any shape and fill (zeros, seeded random, NaN, inf), batch 0 allowed
* ``ReflectTestImage``       -> IMAGE of any shape and fill, batch 0 allowed
* ``ReflectTestConditioning`` -> CONDITIONING: seeded random tensors shaped for the MODEL
* ``ReflectTestLatentStats``  output node: reports shape / finiteness / mean / std of a LATENT
  in the prompt's history (``outputs[<node id>]["reflect_latent_stats"]``)

V1 node API on purpose (works unchanged on every ComfyUI version).
Never shipped: it lives under tests/host and is only placed in a temporary
custom_nodes folder by the host tests.
"""

from .tiny import (ALL_FAMILIES, FAMILIES, PREDICTIONS, build_family_model, build_tiny_controlnet,
                   build_tiny_family_vae, build_tiny_model, family_conditioning, family_of, latent_stats,
                   make_conditioning)

_MAX_SEED = 0xFFFFFFFFFFFFFFFF


class ReflectTestTinyModel:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "family": (list(ALL_FAMILIES), {"default": "sd15", "tooltip": "sd15 / sdxl take the prediction; the "
                                                                             "other families their own"}),
            "prediction": (list(PREDICTIONS), {"default": "eps"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": _MAX_SEED}),
            "flow_shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01}),
        }}

    def build(self, family, prediction, seed, flow_shift):
        if family not in FAMILIES:
            return (build_family_model(family, seed),)
        return (build_tiny_model(family, prediction, seed, flow_shift=flow_shift),)


class ReflectTestTinyVAE:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": _MAX_SEED})},
                "optional": {"family": (["sd15", "flux", "wan21"], {"default": "sd15"})}}

    def build(self, seed, family="sd15"):
        return (build_tiny_family_vae(family, seed),)


class ReflectTestTinyControlNet:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (list(FAMILIES), {"default": "sd15"}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": _MAX_SEED})}}

    def build(self, family, seed):
        return (build_tiny_controlnet(build_tiny_model(family, "eps", 0), seed=seed),)


FILLS = ["zeros", "random", "nan", "inf"]


def _filled(shape, fill, seed):
    import torch
    if fill == "random":
        return torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return torch.full(shape, {"zeros": 0.0, "nan": float("nan"), "inf": float("inf")}[fill])


def _tensor_inputs(channels: bool, side: int, side_max: int, fill: str) -> dict:
    """Inputs of the test nodes that make a tensor of a given shape and fill."""
    shape = {"batch": ("INT", {"default": 1, "min": 0, "max": 64})}
    if channels:
        shape["channels"] = ("INT", {"default": 4, "min": 1, "max": 128})
    return {"required": {**shape,
                         "height": ("INT", {"default": side, "min": 1, "max": side_max}),
                         "width": ("INT", {"default": side, "min": 1, "max": side_max}),
                         "fill": (FILLS, {"default": fill}),
                         "seed": ("INT", {"default": 0, "min": 0, "max": _MAX_SEED})}}


class ReflectTestLatent:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return _tensor_inputs(True, 8, 512, "zeros")  # height and width in latent pixels

    def make(self, batch, channels, height, width, fill, seed):
        return ({"samples": _filled((batch, channels, height, width), fill, seed)},)


class ReflectTestImage:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return _tensor_inputs(False, 64, 4096, "random")

    def make(self, batch, height, width, fill, seed):
        return (_filled((batch, height, width, 3), fill, seed),)


class ReflectTestConditioning:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": _MAX_SEED}),
            "batch": ("INT", {"default": 1, "min": 1, "max": 64}),
            "tokens": ("INT", {"default": 77, "min": 1, "max": 1024}),
            "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.01}),
            "width": ("INT", {"default": 0, "min": 0, "max": 16384, "tooltip": "SDXL size conditioning, 0 = none"}),
            "height": ("INT", {"default": 0, "min": 0, "max": 16384}),
        }}

    def make(self, model, seed, batch, tokens, scale, width, height):
        fam = family_of(model)
        if fam is not None:  # a transformer family: its own conditioning layout
            c = family_conditioning(fam, seed=seed, batch=batch, tokens=tokens)
            return ([[c[0][0] * scale, c[0][1]]],)
        return (make_conditioning(model, seed=seed, batch=batch, tokens=tokens, scale=scale,
                                  width=width or None, height=height or None),)


class ReflectTestLatentStats:
    CATEGORY = "reflect_test"
    RETURN_TYPES = ()
    FUNCTION = "stats"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def stats(self, samples):
        return {"ui": {"reflect_latent_stats": [latent_stats(samples["samples"])]}}


class ReflectTestMemoryProbe:
    """What the server process holds: after a garbage collection, the live torch
    tensors (count and bytes of their distinct storages), the number of objects
    the collector tracks, and the resident memory after glibc returns its free
    pages (malloc_trim), so that allocator slack does not read as growth."""
    CATEGORY = "reflect_test"
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"run": ("INT", {"default": 0, "min": 0, "max": _MAX_SEED,
                                             "tooltip": "change it to run the probe again"})}}

    def probe(self, run):
        import ctypes
        import gc
        import torch
        gc.collect()
        tensors, storages = 0, {}
        for o in gc.get_objects():
            try:
                if isinstance(o, torch.Tensor) and o.device.type != "meta":
                    tensors += 1
                    st = o.untyped_storage()
                    storages[st.data_ptr()] = st.nbytes()
            except Exception:
                pass
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        import psutil
        out = {"tensors": tensors, "tensor_bytes": sum(storages.values()), "gc_objects": len(gc.get_objects()),
               "rss": psutil.Process().memory_info().rss}
        return {"ui": {"reflect_memory": [out]}}


NODE_CLASS_MAPPINGS = {
    "ReflectTestTinyModel": ReflectTestTinyModel,
    "ReflectTestTinyVAE": ReflectTestTinyVAE,
    "ReflectTestTinyControlNet": ReflectTestTinyControlNet,
    "ReflectTestLatent": ReflectTestLatent,
    "ReflectTestImage": ReflectTestImage,
    "ReflectTestConditioning": ReflectTestConditioning,
    "ReflectTestLatentStats": ReflectTestLatentStats,
    "ReflectTestMemoryProbe": ReflectTestMemoryProbe,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ReflectTestTinyModel": "Reflect test: tiny model",
    "ReflectTestTinyVAE": "Reflect test: tiny VAE",
    "ReflectTestTinyControlNet": "Reflect test: tiny ControlNet",
    "ReflectTestLatent": "Reflect test: latent",
    "ReflectTestImage": "Reflect test: image",
    "ReflectTestConditioning": "Reflect test: random conditioning",
    "ReflectTestLatentStats": "Reflect test: latent stats",
    "ReflectTestMemoryProbe": "Reflect test: memory probe",
}

"""ComfyUI-Reflect: inference-time quality methods for diffusion models.

ComfyUI imports this folder as a custom node package and calls
``comfy_entrypoint()`` (V3 node API). The nodes are imported when ComfyUI asks
for them, so importing this package alone needs no ComfyUI.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import ReflectExtension
    return ReflectExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

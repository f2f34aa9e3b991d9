"""ComfyUI-Reflect: inference-time quality methods for diffusion models.

ComfyUI imports this folder as a custom node package and calls
``comfy_entrypoint()`` (V3 node API).
"""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

WEB_DIRECTORY = "./js"


class ReflectExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .nodes import NODE_LIST
        return list(NODE_LIST)


async def comfy_entrypoint() -> ReflectExtension:
    return ReflectExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

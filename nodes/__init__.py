"""ComfyUI adapters of the methods in ``samplers/`` (V3 node API)."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import adaptive, quality_gate, swg, w2sd, zigzag

NODE_LIST = [*zigzag.NODES, *w2sd.NODES, *swg.NODES, *quality_gate.NODES, *adaptive.NODES]


class ReflectExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_LIST)

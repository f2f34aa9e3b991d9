"""ComfyUI adapters of the methods in ``samplers/`` (V3 node API)."""

from . import zigzag

NODE_LIST = [*zigzag.NODES]

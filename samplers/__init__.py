"""Pure-torch implementations of the pack's methods (no ComfyUI import).

One method per module, k-diffusion style: small functions over a denoiser
``denoise(x, sigma) -> x0`` and a descending ``sigmas`` schedule.
"""

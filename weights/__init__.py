"""Model-weight machinery of the pack (pure torch, no ComfyUI import):
forward-time weight differences between patches of one checkpoint."""

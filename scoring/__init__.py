"""Quality estimators (pure torch, no ComfyUI import): ImageReward, PickScore,
HPSv2.1 and the LAION aesthetic predictor behind one ``Scorer`` interface
(scoring/base.py). The nodes wrap a Scorer's module in ComfyUI's ModelPatcher."""

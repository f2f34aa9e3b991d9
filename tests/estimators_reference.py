"""The originals of the CLIP-based estimators, run in an isolated Python
(transformers, open_clip_torch, pillow, safetensors): build each model with
random weights of the real architecture, save it in its published format, and
score PNG images with the original code path.

* PickScore v1: transformers ``CLIPModel`` (ViT-H/14 config of
  laion/CLIP-ViT-H-14-laion2B-s32B-b79K) saved with ``save_pretrained``;
  scored as the PickScore README (processor, ``get_image_features`` /
  ``get_text_features``, normalise, ``logit_scale.exp() * text @ image.T``).
  Images through transformers' PIL image processor (``CLIPImageProcessorPil``,
  the processor PickScore was released with; transformers 5's default
  torchvision backend is scored too, as ``scores_torchvision``, for the record).
* HPSv2.1: open_clip ``ViT-H-14`` (``create_model``), saved as
  ``{"state_dict": ...}`` in ``HPS_v2.1_compressed.pt``; scored as
  ``hpsv2.img_score.score``: ``image_transform(224, is_train=False)`` on the
  PIL image, open_clip's tokenizer, one image at a time, diagonal of
  ``image_features @ text_features.T``.
* Aesthetic v2: transformers ``CLIPModel`` with openai/clip-vit-large-patch14's
  config (``model.safetensors``) + the published MLP saved with ``torch.save``;
  scored as ``simple_inference.py``: image features, numpy L2 normalisation, MLP.

Called by tests/test_estimators_parity.py as
``$ESTIMATORS_REFERENCE_PYTHON tests/estimators_reference.py OUT_DIR SIZE SEED``
(SIZE ``small``: reduced widths and depths of the same architectures, or
``full``: the real configurations), with ``OUT_DIR/cases.json``
({"images", "prompts", "tokenizer_dir", "estimators"}) and the PNGs; writes
each model's files under ``OUT_DIR/<name>/`` and ``OUT_DIR/reference.json``.
Not collected by pytest.
"""

import gc
import json
import math
import os
import sys

import numpy as np

CONFIGS = {
    "full": {
        "vit_h": dict(vision=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                                  intermediate_size=5120, patch_size=14, head_width=80),
                      text=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096), embed=1024, act="gelu"),
        "vit_l": dict(vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                  intermediate_size=4096, patch_size=14),
                      text=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                intermediate_size=3072), embed=768, act="quick_gelu"),
    },
    "small": {  # same families, 16 heads of narrower width, 2-3 layers
        "vit_h": dict(vision=dict(hidden_size=320, num_hidden_layers=3, num_attention_heads=16,
                                  intermediate_size=1280, patch_size=14, head_width=20),
                      text=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=16,
                                intermediate_size=1024), embed=192, act="gelu"),
        "vit_l": dict(vision=dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=16,
                                  intermediate_size=1024, patch_size=14),
                      text=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=8,
                                intermediate_size=512), embed=768, act="quick_gelu"),
    },
}


def randomise(model, seed):
    """Every parameter random at scales that keep activations O(1) (norms near 1,
    biases and embeddings O(0.1-0.5)); the logit scale at log(100) +- a bit."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            low = name.lower()
            if "logit_scale" in low:
                p.copy_(torch.tensor(math.log(100.0)) + 0.1 * r)
            elif "norm" in low or ".ln_" in low or low.startswith("ln_") or "ln_pre" in low or "ln_post" in low:
                p.copy_(1.0 + 0.2 * r if name.endswith("weight") else 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif p.ndim >= 2 and "embed" not in low and "token" not in low:
                fan_in = p.shape[0] if low.endswith(("visual.proj", "text_projection")) and p.ndim == 2 \
                    and "weight" not in low else p[0].numel()
                p.copy_(r / math.sqrt(fan_in))
            else:
                p.copy_(0.5 * r)


def hf_clip(cfg, seed):
    import torch
    from transformers import CLIPConfig, CLIPModel
    v = {k: x for k, x in cfg["vision"].items() if k != "head_width"}
    conf = CLIPConfig(vision_config=dict(v, image_size=224, hidden_act=cfg["act"], layer_norm_eps=1e-5),
                      text_config=dict(cfg["text"], hidden_act=cfg["act"], vocab_size=49408,
                                       max_position_embeddings=77, layer_norm_eps=1e-5,
                                       bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
                      projection_dim=cfg["embed"])
    torch.manual_seed(seed)
    model = CLIPModel(conf).eval()
    randomise(model, seed)
    return model


def processors(tokenizer_dir):
    from transformers import CLIPImageProcessor, CLIPImageProcessorPil, CLIPTokenizerFast
    kw = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_resize=True,
              do_center_crop=True, do_normalize=True, do_rescale=True, rescale_factor=1 / 255, resample=3,
              do_convert_rgb=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
              image_std=[0.26862954, 0.26130258, 0.27577711])
    tok = CLIPTokenizerFast(os.path.join(tokenizer_dir, "vocab.json"), os.path.join(tokenizer_dir, "merges.txt"))
    return CLIPImageProcessorPil(**kw), CLIPImageProcessor(**kw), tok


def features(out):
    return out if hasattr(out, "shape") else out.pooler_output  # transformers 5 returns a model output


def pickscore(cases, images, size, seed, out):
    import torch
    model = hf_clip(CONFIGS[size]["vit_h"], seed)
    model.save_pretrained(os.path.join(out, "pickscore"), safe_serialization=True)
    pil_proc, tv_proc, tok = processors(cases["tokenizer_dir"])
    prompts = cases["prompts"]

    def run(proc, prompts):
        with torch.no_grad():
            im = features(model.get_image_features(**proc(images=images, return_tensors="pt")))
            im = im / im.norm(dim=-1, keepdim=True)
            t = tok(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            tx = features(model.get_text_features(**t))
            tx = tx / tx.norm(dim=-1, keepdim=True)
            return model.logit_scale.exp() * (tx @ im.T)

    m = run(pil_proc, prompts)
    ids = [tok(p, padding="max_length", truncation=True, max_length=77)["input_ids"] for p in prompts]
    res = {"scores": m.diagonal().tolist(), "rank_prompt_scores": run(pil_proc, prompts[:1])[0].tolist(),
           "scores_torchvision": run(tv_proc, prompts).diagonal().tolist(), "token_ids": ids}
    del model
    gc.collect()
    return res


def hps(cases, images, size, seed, out):
    import open_clip
    import torch
    cfg = CONFIGS[size]["vit_h"]
    if size == "full":
        model = open_clip.create_model("ViT-H-14", pretrained=None)
    else:
        v, t = cfg["vision"], cfg["text"]
        model = open_clip.CLIP(embed_dim=cfg["embed"],
                               vision_cfg=dict(image_size=224, layers=v["num_hidden_layers"], width=v["hidden_size"],
                                               head_width=v["head_width"], patch_size=v["patch_size"],
                                               mlp_ratio=v["intermediate_size"] / v["hidden_size"]),
                               text_cfg=dict(context_length=77, vocab_size=49408, width=t["hidden_size"],
                                             heads=t["num_attention_heads"], layers=t["num_hidden_layers"],
                                             mlp_ratio=t["intermediate_size"] / t["hidden_size"]))
    model.eval()
    randomise(model, seed + 1)
    os.makedirs(os.path.join(out, "hps"), exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, os.path.join(out, "hps", "HPS_v2.1_compressed.pt"))
    preprocess_val = open_clip.image_transform(model.visual.image_size, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-H-14")

    def score(img, prompt):  # hpsv2.img_score.score, one image and prompt, fp32 on the CPU
        with torch.no_grad():
            image = preprocess_val(img).unsqueeze(0)
            text = tokenizer([prompt])
            outputs = model(image, text)
            if isinstance(outputs, dict):
                image_features, text_features = outputs["image_features"], outputs["text_features"]
            else:
                image_features, text_features = outputs[0], outputs[1]
            logits_per_image = image_features @ text_features.T
            return float(torch.diagonal(logits_per_image)[0])

    prompts = cases["prompts"]
    res = {"scores": [score(i, p) for i, p in zip(images, prompts)],
           "rank_prompt_scores": [score(i, prompts[0]) for i in images],
           "token_ids": tokenizer(prompts).tolist()}
    del model
    gc.collect()
    return res


def aesthetic(cases, images, size, seed, out):
    import torch
    from torch import nn
    model = hf_clip(CONFIGS[size]["vit_l"], seed + 2)
    d = os.path.join(out, "aesthetic")
    model.save_pretrained(d, safe_serialization=True)

    class MLP(nn.Module):  # improved-aesthetic-predictor's (its LightningModule's layers)
        def __init__(self, input_size):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                        nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16),
                                        nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    mlp = MLP(768).eval()
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for name, p in mlp.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if name.endswith("bias") else 1 / math.sqrt(p.shape[-1])))
    torch.save(mlp.state_dict(), os.path.join(d, "sac+logos+ava1-l14-linearMSE.pth"))
    pil_proc, tv_proc, _ = processors(cases["tokenizer_dir"])

    def normalized(a, axis=-1, order=2):
        l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
        l2[l2 == 0] = 1
        return a / np.expand_dims(l2, axis)

    def run(proc):
        out_ = []
        with torch.no_grad():
            for img in images:  # simple_inference.py scores one image at a time
                f = features(model.get_image_features(**proc(images=img, return_tensors="pt")))
                emb = normalized(f.cpu().detach().numpy())
                out_.append(float(mlp(torch.from_numpy(emb).type(torch.FloatTensor))[0, 0]))
        return out_

    res = {"scores": run(pil_proc), "scores_torchvision": run(tv_proc)}
    del model
    gc.collect()
    return res


def main(out_dir, size="small", seed=0):
    import open_clip
    import torch
    import transformers
    from PIL import Image
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cases = json.load(open(os.path.join(out_dir, "cases.json")))
    images = [Image.open(os.path.join(out_dir, n)).convert("RGB") for n in cases["images"]]
    funcs = {"pickscore": pickscore, "hpsv2.1": hps, "aesthetic": aesthetic}
    ref = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "open_clip": open_clip.__version__}, "size": size}
    for name in cases.get("estimators", list(funcs)):
        ref[name] = funcs[name](cases, images, size, seed, out_dir)
    json.dump(ref, open(os.path.join(out_dir, "reference.json"), "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "small", int(sys.argv[3]) if len(sys.argv) > 3 else 0)

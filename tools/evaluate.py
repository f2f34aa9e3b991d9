#!/usr/bin/env python3
"""Paired win-rate evaluation of two or more workflows on ComfyUI servers.

"Does it help on my model?": every API-format workflow (ComfyUI "Export
(API)", with the ``{prompt}`` / ``{seed}`` tokens of tools/calibrate.py) is run
for each of the first N prompts of a prompt file, seed = base_seed + prompt
index (the papers' protocol), spread over one or several servers with
calibrate's client (one job at a time per server, a failed job retried then
recorded, an unreachable server dropped, a JSONL state file to resume from).

Scoring happens inside the servers: to each workflow the tool appends, per
estimator, the pack's "Load Quality Model" (``QualityModelLoader``) and a
``QualityGate`` fed by the workflow's image output (the ``images`` input of its
first SaveImage / PreviewImage, else its last VAEDecode), so the estimators
stay under the servers' model management; the scores are read from the
gate's ``reflect_scores`` UI output in ``/history``.

Per estimator and pair of workflows (X vs Y, same prompt and seed) the report
gives X's win rate over the non-tied prompts with an exact (Clopper-Pearson)
95 % interval and the exact two-sided binomial p-value against 50 %, the
ties, and the mean paired score difference X - Y with its standard error;
per workflow the mean score, the model evaluations per image (the pack nodes'
own cost reports in the history UI when present, else KSampler / KSampler
(Advanced) counted as steps x CFG branches, 1 at cfg 1 else 2, and
ZigzagKSampler by samplers.zigzag.evaluations) and the execution time per
image (the server's execution_start..execution_success, scoring included).
Written to ``--out``: report.md, report.json, winrate.png (matplotlib) and
contact_<X>_vs_<Y>.png (the prompts with the largest differences each way,
images fetched from the servers' /view; Pillow).

``--cfg-sweep 3,5,7,9`` adds matched-guidance baselines: copies of the
baseline workflow (the first one, or ``--baseline``) with every cfg input
(KSampler, KSamplerAdvanced, SamplerCustom, CFGGuider, DualCFGGuider's
cfg_conds, ...) set to each value; each method is reported against each, so
a gain that more guidance alone gives shows up as such.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from typing import Callable, Mapping, Sequence

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tools.calibrate import (SCORES_KEY, ComfyClient, JobError, ServerUnreachable, _valid_scores,  # noqa: E402
                             add_run_arguments,
                             check_workflow, collect_scores, load_state, read_json, run_jobs, server_urls,
                             substitute)

NAME = "evaluate"
IMAGE_SINKS = ("SaveImage", "PreviewImage")
DECODERS = ("VAEDecode", "VAEDecodeTiled")
CFG_INPUTS = {"DualCFGGuider": ("cfg_conds",)}  # besides every numeric "cfg" input
LOADER, GATE = "QualityModelLoader", "QualityGate"
EVALS_TEXT = re.compile(r"([0-9]+(?:\.[0-9]+)?) evaluations per image")
ONE_EVAL_SAMPLERS = ("euler", "euler_ancestral", "ddim", "ddpm", "lcm", "dpmpp_2m", "dpmpp_2m_sde", "lms",
                     "ipndm", "deis", "res_multistep", "uni_pc", "uni_pc_bh2", "euler_cfg_pp")


# --------------------------------------------------------------------------- workflow rewriting

def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _order(k: str):
    return (0, int(k), "") if str(k).isdigit() else (1, 0, str(k))


def image_source(graph: Mapping) -> tuple[list, str | None]:
    """``(link, sink_id)``: the IMAGE link the workflow saves or previews (the
    ``images`` input of its first SaveImage / PreviewImage in node-id order),
    else the output of its last VAEDecode (``sink_id`` None). ValueError when
    it has neither."""
    for nid in sorted(graph, key=_order):
        node = graph[nid]
        if node.get("class_type") in IMAGE_SINKS and _link(node.get("inputs", {}).get("images")):
            return list(node["inputs"]["images"]), nid
    decoders = [nid for nid in sorted(graph, key=_order) if graph[nid].get("class_type") in DECODERS]
    if decoders:
        return [decoders[-1], 0], None
    raise ValueError("no image output: the workflow has no SaveImage / PreviewImage with an images link and no "
                     "VAEDecode")


def add_scoring(graph: Mapping, estimators: Sequence[tuple[str, str]], loader_inputs: Mapping | None = None,
                gate_inputs: Mapping | None = None) -> tuple[dict, dict[str, str], str]:
    """A copy of ``graph`` with, per ``(estimator, weights)``, a QualityModelLoader
    and a QualityGate scoring the workflow's image output against ``{prompt}``
    (filled by :func:`substitute`), and a PreviewImage on that output when the
    workflow shows none. Returns ``(graph, {gate node id: estimator},
    image node id)``; new ids are numbers after the largest numeric id."""
    out = copy.deepcopy(dict(graph))
    src, sink = image_source(out)
    nxt = max([int(k) for k in out if str(k).isdigit()] + [0]) + 1
    gates = {}
    for est, weights in estimators:
        lid, gid = str(nxt), str(nxt + 1)
        nxt += 2
        out[lid] = {"class_type": LOADER, "inputs": {**dict(loader_inputs or {}), "estimator": est,
                                                     "weights": weights or "default"}}
        out[gid] = {"class_type": GATE, "inputs": {**dict(gate_inputs or {}), "image_reward": [lid, 0],
                                                   "images": list(src), "prompt": "{prompt}"}}
        gates[gid] = est
    if sink is None:
        sink = str(nxt)
        out[sink] = {"class_type": "PreviewImage", "inputs": {"images": list(src)}}
    return out, gates, sink


def with_cfg(graph: Mapping, cfg: float) -> dict:
    """A copy of ``graph`` with every numeric cfg input (any node's ``cfg``,
    DualCFGGuider's ``cfg_conds``) set to ``cfg``; ValueError when it has none."""
    out = copy.deepcopy(dict(graph))
    n = 0
    for node in out.values():
        inputs = node.get("inputs", {})
        for name in ("cfg",) + CFG_INPUTS.get(node.get("class_type"), ()):
            if _numeric(inputs.get(name)):
                inputs[name] = float(cfg)
                n += 1
    if not n:
        raise ValueError("--cfg-sweep: the baseline workflow has no numeric cfg input to rewrite")
    return out


def select_output(graph: Mapping, sink: str) -> dict:
    """The part of ``graph`` that output node ``sink`` needs (itself and its
    ancestors): one image output of a workflow that makes several (the shipped
    zsampling_sdxl.json saves the Z-Sampling and the standard image)."""
    if sink not in graph:
        raise ValueError(f"no node {sink!r} (output nodes: "
                         f"{[k for k, n in graph.items() if n.get('class_type') in IMAGE_SINKS]})")
    keep = ancestors(graph, sink) | {sink}
    return {k: copy.deepcopy(v) for k, v in graph.items() if k in keep}


def read_workflow(spec: str, prompt_input: str | None = None) -> dict:
    """``FILE`` or ``FILE:NODE`` (only what output node NODE needs) as an API
    workflow; ``prompt_input`` ``NODE.INPUT`` (e.g. ``3.text``) is set to
    ``{prompt}`` first, for a workflow exported without the token."""
    path, sink = spec, None
    if not os.path.exists(spec) and ":" in spec:
        path, sink = spec.rsplit(":", 1)
    graph = read_json(path)
    if isinstance(graph, Mapping) and not ("nodes" in graph and "links" in graph):
        if sink is not None:
            graph = select_output(graph, sink)
        if prompt_input:
            nid, _, name = prompt_input.partition(".")
            if nid in graph and name in graph[nid].get("inputs", {}):
                graph[nid]["inputs"][name] = "{prompt}"
    return check_workflow(graph, spec)


def graph_sha(graph: Mapping) -> str:
    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- cost

def ancestors(graph: Mapping, nid: str) -> set[str]:
    """Every node ``nid`` depends on through links (``nid`` excluded)."""
    seen, stack = set(), [nid]
    while stack:
        for v in graph.get(stack.pop(), {}).get("inputs", {}).values():
            if _link(v) and v[0] not in seen and v[0] in graph:
                seen.add(v[0])
                stack.append(v[0])
    return seen


def node_evaluations(node: Mapping) -> float | None:
    """Model evaluations per image of one sampling node from its inputs, or None
    when they cannot be told (linked or unknown inputs, another sampler)."""
    cls, x = node.get("class_type"), node.get("inputs", {})
    if cls in ("KSampler", "KSamplerAdvanced") and _numeric(x.get("steps")) and _numeric(x.get("cfg")):
        steps = int(x["steps"])
        if cls == "KSamplerAdvanced":
            if not (_numeric(x.get("start_at_step")) and _numeric(x.get("end_at_step"))):
                return None
            steps = max(0, min(int(x["end_at_step"]), steps) - int(x["start_at_step"]))
        if x.get("sampler_name") not in ONE_EVAL_SAMPLERS:
            return None
        return float(steps * (1 if float(x["cfg"]) == 1.0 else 2))
    if cls == "ZigzagKSampler" and all(_numeric(x.get(k)) for k in ("steps", "cfg", "zigzag_steps", "rounds",
                                                                     "inversion_cfg")):
        if x.get("sampler_name") not in ONE_EVAL_SAMPLERS:
            return None
        from tools.reflect_pack import module
        zz = module("samplers.zigzag")
        lam = zz.resolve_steps(int(x["zigzag_steps"]), int(x["steps"]))
        return float(zz.evaluations(int(x["steps"]), lam, int(x["rounds"]), float(x["cfg"]),
                                    float(x["inversion_cfg"]), x.get("inversion", "published"))["minimal"])
    return None


COST_PATCHES = ("SlidingWindowGuidance",)  # model patches that add evaluations (crops) to a sampler
SAMPLING_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "ZigzagKSampler",
                  "WeakStrongReflection", "WeakStrongReflectionLoRA", "AdaptiveStudentTeacher")


def is_sampler(node: Mapping) -> bool:
    """A node that runs the diffusion model: ComfyUI's and the pack's sampling
    nodes, and any other ``...KSampler`` / ``...KSamplerAdvanced``. Nodes that
    only make a SAMPLER, SIGMAS or GUIDER object (KSamplerSelect, SamplerZigzag,
    CFGGuider) are costed where that object is used."""
    cls = str(node.get("class_type", ""))
    return cls in SAMPLING_NODES or cls.endswith(("KSampler", "KSamplerAdvanced"))


def evaluations_per_image(graph: Mapping, outputs: Mapping | None = None) -> tuple[float | None, str]:
    """``(evaluations per image, how they were counted)``: the cost reports the
    pack's nodes put in their history UI (``reflect_evaluations`` per image, or
    the text "N evaluations per image"), covering the samplers upstream of
    them, plus every other sampling node counted from its inputs
    (:func:`node_evaluations`). None when a sampler can be counted neither way."""
    covered, total, parts = set(), 0.0, []
    for nid in sorted(outputs or {}, key=_order):
        out = outputs[nid]
        if not isinstance(out, Mapping):
            continue
        value = None
        if isinstance(out.get("reflect_evaluations"), list) and _valid_scores(out["reflect_evaluations"]):
            v = out["reflect_evaluations"]
            value = sum(v) / len(v)
        else:
            for t in out.get("text") or []:
                m = EVALS_TEXT.search(str(t))
                if m:
                    value = float(m.group(1))
                    break
        if value is not None:
            total += value
            covered |= ancestors(graph, nid) | {nid}
            parts.append(f"{graph.get(nid, {}).get('class_type', nid)} report")
    for nid in sorted(graph, key=_order):
        node = graph[nid]
        if nid in covered or not is_sampler(node):
            continue
        patched = sorted({graph[a].get("class_type") for a in ancestors(graph, nid)} & set(COST_PATCHES))
        v = None if patched else node_evaluations(node)
        if v is None:
            return None, f"{node.get('class_type')} (node {nid}) not counted" + (
                f": {', '.join(patched)} changes its cost" if patched else "")
        total += v
        parts.append(f"{node.get('class_type')} inputs")
    return (total if parts else None), (", ".join(parts) or "no sampler")


# --------------------------------------------------------------------------- statistics

def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_log_pmf(i, n, p) for i in range(0, k + 1)]
    m = max(logs)
    return 0.0 if m == -math.inf else min(1.0, math.exp(m) * sum(math.exp(v - m) for v in logs))


def binom_sf_incl(k: int, n: int, p: float) -> float:
    """P(X >= k)."""
    return 1.0 - binom_cdf(k - 1, n, p) if k <= n // 2 else binom_cdf(n - k, n, 1.0 - p)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion k / n:
    lower = the p with P(X >= k | p) = alpha/2 (0 at k = 0), upper = the p with
    P(X <= k | p) = alpha/2 (1 at k = n, 1 - lower(n - k) by symmetry), found by bisection."""
    if not (0 <= k <= n) or n < 1:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n, n >= 1 (k={k}, n={n})")
    a = (1.0 - confidence) / 2.0

    def solve(f):  # f increasing in p; the p with f(p) = a
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            if f(mid) < a:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: binom_sf_incl(k, n, p))
    upper = 1.0 if k == n else 1.0 - solve(lambda q: binom_sf_incl(n - k, n, q))  # symmetry: k <-> n - k
    return lower, upper


def binom_p_value(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n against p = 1/2."""
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf(min(k, n - k), n, 0.5))


def paired_stats(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """X vs Y on paired scores: wins (x > y), losses, ties (x == y), the win rate
    over the non-tied pairs with its Clopper-Pearson interval and two-sided
    binomial p-value, the mean of x - y and its standard error (sd with
    ddof 1 / sqrt(n); None below two pairs)."""
    if len(x) != len(y):
        raise ValueError("paired_stats: x and y differ in length")
    d = [a - b for a, b in zip(x, y)]
    wins, losses = sum(v > 0 for v in d), sum(v < 0 for v in d)
    ties, n = len(d) - wins - losses, len(d)
    decided = wins + losses
    out = {"n": n, "wins": wins, "losses": losses, "ties": ties,
           "win_rate": wins / decided if decided else None,
           "ci": list(clopper_pearson(wins, decided, confidence)) if decided else None,
           "p_value": binom_p_value(wins, decided) if decided else None,
           "mean_diff": sum(d) / n if n else None, "se": None}
    if n >= 2:
        m = out["mean_diff"]
        out["se"] = math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1)) / math.sqrt(n)
    return out


# --------------------------------------------------------------------------- the run

def record_score(rec: Mapping, estimator: str) -> float:
    """A job's score with ``estimator``: the mean over its images."""
    s = rec["scores"][estimator]
    return sum(s) / len(s)


def _valid_record(rec: Mapping) -> bool:
    s = rec.get("scores")
    return isinstance(s, Mapping) and bool(s) and all(_valid_scores(v) for v in s.values())


def execution_seconds(entry: Mapping) -> float | None:
    """execution_start .. execution_success of a history entry (server clock), in seconds."""
    ts = {}
    for m in (entry.get("status") or {}).get("messages") or []:
        if isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[1], Mapping) and "timestamp" in m[1]:
            ts[m[0]] = m[1]["timestamp"]
    if "execution_start" in ts and "execution_success" in ts:
        return max(0.0, (ts["execution_success"] - ts["execution_start"]) / 1000.0)
    return None


def read_state(path: str, prompts: Sequence[str], workflows: Mapping[str, Mapping]) -> tuple[dict, dict]:
    """``(done, failed)`` of a state file keyed by ``(workflow, index)``, the
    workflows given only; a record of a workflow that has changed since
    (another ``workflow_sha``) raises ValueError."""
    shas = {name: graph_sha(g) for name, g in workflows.items()}

    def check(rec):
        w = rec.get("workflow")
        if w in shas and rec.get("workflow_sha") not in (None, shas[w]):
            return (f"workflow {w!r} has changed since this state was written (use another --state, or the "
                    "workflow it was run with)")
        return None

    done, failed = load_state(path, prompts, key=lambda r: (r.get("workflow"), r["index"]), valid=_valid_record,
                              check=check, name=NAME)
    return ({k: v for k, v in done.items() if k[0] in shas}, {k: v for k, v in failed.items() if k[0] in shas})


def run_evaluation(workflows: Mapping[str, Mapping], prompts: Sequence[str], servers: Sequence[str],
                   estimators: Sequence[tuple[str, str]], state_path: str | None = None, base_seed: int = 0,
                   retries: int = 1, client_factory: Callable[[str], object] | None = None, progress: bool = True,
                   loader_inputs: Mapping | None = None, gate_inputs: Mapping | None = None,
                   stop: threading.Event | None = None):
    """Run every (workflow, prompt) job with scoring appended; resume from and
    append to ``state_path``. Returns calibrate's JobsResult keyed by
    ``(workflow name, prompt index)``; each record holds ``scores``
    ({estimator: [one per image]}), ``images`` (the /view references),
    ``evaluations`` (per image), ``seconds`` (execution time per image),
    ``server`` and ``seed``."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: none to run")
    server_urls(servers)
    built, shas = {}, {}
    for name, g in workflows.items():
        check_workflow(g, name)
        try:
            built[name] = add_scoring(g, estimators, loader_inputs, gate_inputs)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        shas[name] = graph_sha(g)

    done = read_state(state_path, prompts, workflows)[0] if state_path else {}
    stop = stop or threading.Event()
    client_id = uuid.uuid4().hex
    ests = [e for e, _ in estimators]

    def execute(client, key, url):
        w, i = key
        graph, gates, sink = built[w]
        seed = int(base_seed) + i
        g = substitute(graph, prompts[i], seed)
        t0 = time.monotonic()
        entry = client.wait(client.submit(g, client_id), stop)
        wall = time.monotonic() - t0
        collect_scores(entry)  # raises JobError for a failed execution
        outputs = entry.get("outputs") or {}
        scores = {}
        for gid, est in gates.items():
            s = (outputs.get(gid) or {}).get(SCORES_KEY)
            if not _valid_scores(s):
                raise JobError(f"the {est} QualityGate (node {gid}) gave no scores: {s!r}")
            scores[est] = [float(v) for v in s]
        n_img = len(scores[ests[0]])
        images = [dict(filename=im.get("filename"), subfolder=im.get("subfolder", ""), type=im.get("type", "output"))
                  for im in (outputs.get(sink) or {}).get("images") or [] if isinstance(im, Mapping)]
        evals, how = evaluations_per_image(graph, outputs)
        secs = execution_seconds(entry)
        return {"workflow": w, "index": i, "prompt": prompts[i], "seed": seed, "scores": scores, "images": images,
                "evaluations": evals, "evaluations_from": how,
                "seconds": (secs if secs is not None else wall) / n_img,
                "seconds_from": "server" if secs is not None else "client", "server": url,
                "workflow_sha": shas[w]}

    keys = [(w, i) for i in range(len(prompts)) for w in built]
    return run_jobs(keys, execute, servers, state_path, done, retries, client_factory, progress, stop, None,
                    lambda k, url, err: {"workflow": k[0], "index": k[1], "prompt": prompts[k[1]], "scores": None,
                                         "server": url, "error": err, "workflow_sha": shas[k[0]]},
                    name=NAME, unit="job")


# --------------------------------------------------------------------------- the report

def default_pairs(roles: Mapping[str, str]) -> list[tuple[str, str]]:
    """(X, Y) pairs reported as "X vs Y": each method against the baseline and
    each cfg-sweep baseline, each sweep baseline against the baseline, and
    later methods against earlier ones (``roles``: name -> baseline / sweep / method, in order)."""
    names = list(roles)
    base = [n for n in names if roles[n] == "baseline"]
    sweep = [n for n in names if roles[n] == "sweep"]
    methods = [n for n in names if roles[n] == "method"]
    pairs = [(m, b) for m in methods for b in base + sweep]
    pairs += [(s, b) for s in sweep for b in base]
    pairs += [(methods[j], methods[i]) for i in range(len(methods)) for j in range(i + 1, len(methods))]
    return pairs


def build_report(records: Mapping, roles: Mapping[str, str], estimators: Sequence[str], n_prompts: int,
                 failed: Mapping | None = None, meta: Mapping | None = None) -> dict:
    """The report as data, from the records alone (``(workflow, index) -> record``)."""
    by_w = {w: {i: r for (ww, i), r in records.items() if ww == w} for w in roles}
    failed = dict(failed or {})
    rep = {**dict(meta or {}), "n_prompts": n_prompts, "estimators": list(estimators), "workflows": {},
           "pairs": [], "failed": [{"workflow": k[0], "index": k[1], "error": e} for k, e in sorted(failed.items())]}
    for w, role in roles.items():
        recs = by_w[w]
        ev = [r["evaluations"] for r in recs.values() if r.get("evaluations") is not None]
        secs = [r["seconds"] for r in recs.values() if r.get("seconds") is not None]
        rep["workflows"][w] = {
            "role": role, "scored": len(recs), "failed": sum(1 for k in failed if k[0] == w),
            "mean_score": {e: (sum(record_score(r, e) for r in recs.values()) / len(recs) if recs else None)
                           for e in estimators},
            "evaluations_per_image": sum(ev) / len(ev) if ev else None,
            "evaluations_from": sorted({r.get("evaluations_from", "") for r in recs.values()}),
            "seconds_per_image": sum(secs) / len(secs) if secs else None,
        }
    for x, y in default_pairs(roles):
        common = sorted(set(by_w[x]) & set(by_w[y]))
        for e in estimators:
            st = paired_stats([record_score(by_w[x][i], e) for i in common],
                              [record_score(by_w[y][i], e) for i in common])
            diffs = sorted(((record_score(by_w[x][i], e) - record_score(by_w[y][i], e), i) for i in common))
            rep["pairs"].append({"x": x, "y": y, "estimator": e, **st,
                                 "largest_x_better": [i for d, i in reversed(diffs) if d > 0][:8],
                                 "largest_y_better": [i for d, i in diffs if d < 0][:8]})
    return rep


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def report_markdown(rep: Mapping) -> str:
    lines = [f"# Paired evaluation: {rep.get('prompts', '')}", "",
             f"{rep['n_prompts']} prompts, seed = {rep.get('base_seed', 0)} + prompt index; estimators: "
             f"{', '.join(rep['estimators'])}.", "",
             "| workflow | role | scored | failed | " + " | ".join(f"mean {e}" for e in rep["estimators"])
             + " | evaluations / image | s / image |",
             "|---|---|---|---|" + "---|" * len(rep["estimators"]) + "---|---|"]
    for w, s in rep["workflows"].items():
        lines.append(f"| {w} | {s['role']} | {s['scored']} | {s['failed']} | "
                     + " | ".join(_f(s["mean_score"][e], "{:.4f}") for e in rep["estimators"])
                     + f" | {_f(s['evaluations_per_image'], '{:g}')} | {_f(s['seconds_per_image'], '{:.2f}')} |")
    lines += ["", "Win rate of X over Y on the prompts both scored, ties excluded (exact Clopper-Pearson 95 % "
              "interval, two-sided binomial p against 50 %); mean difference X - Y +- its standard error.", "",
              "| X vs Y | estimator | n | wins | losses | ties | win rate | 95 % CI | p | mean diff +- SE |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in rep["pairs"]:
        ci = "-" if p["ci"] is None else f"{p['ci'][0]:.3f}-{p['ci'][1]:.3f}"
        lines.append(f"| {p['x']} vs {p['y']} | {p['estimator']} | {p['n']} | {p['wins']} | {p['losses']} | "
                     f"{p['ties']} | {_f(p['win_rate'])} | {ci} | {_f(p['p_value'], '{:.3g}')} | "
                     f"{_f(p['mean_diff'], '{:+.4f}')} +- {_f(p['se'], '{:.4f}')} |")
    if rep["failed"]:
        lines += ["", "Failed jobs:", ""] + [f"- {f['workflow']} #{f['index']}: {f['error']}" for f in rep["failed"]]
    if rep.get("pending"):
        lines += ["", f"Not run (no server left, or stopped): {len(rep['pending'])} jobs; run again to resume."]
    for name in rep.get("figures", []):
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def plot_win_rates(rep: Mapping, path: str) -> bool:
    """winrate.png: each pair's win rate with its interval (matplotlib); False when it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{NAME}: matplotlib is not installed, no win-rate plot (pip install matplotlib)", file=sys.stderr)
        return False
    rows = [p for p in rep["pairs"] if p["win_rate"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 1) + 1.2))
    for j, p in enumerate(rows):
        lo, hi = p["ci"]
        ax.errorbar([p["win_rate"]], [j], xerr=[[p["win_rate"] - lo], [hi - p["win_rate"]]], fmt="o", capsize=3)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{p['x']} vs {p['y']} ({p['estimator']})" for p in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("win rate of X (ties excluded), exact 95 % interval")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def contact_sheet(pair: Mapping, records: Mapping, path: str, fetch: Callable[[Mapping], bytes],
                  per_side: int = 4, size: int = 256) -> bool:
    """contact_<X>_vs_<Y>.png: the ``per_side`` prompts where X beat Y by most and
    those where Y beat X by most, each row X's image | Y's image with the scores
    (Pillow; images from ``fetch(record)``, the first of each job)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        print(f"{NAME}: Pillow is not installed, no contact sheet (pip install pillow)", file=sys.stderr)
        return False
    x, y, e = pair["x"], pair["y"], pair["estimator"]
    rows = [(i, "X better") for i in pair["largest_x_better"][:per_side]]
    rows += [(i, "Y better") for i in pair["largest_y_better"][:per_side]]
    if not rows:
        return False
    pad, text_h = 4, 30
    sheet = Image.new("RGB", (2 * size + 3 * pad, len(rows) * (size + text_h + pad) + pad + 18), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 2), f"left: {x}   right: {y}   ({e})", fill="black")
    for r, (i, label) in enumerate(rows):
        top = 18 + pad + r * (size + text_h + pad)
        for c, w in enumerate((x, y)):
            rec = records[(w, i)]
            left = pad + c * (size + pad)
            try:
                img = Image.open(io.BytesIO(fetch(rec))).convert("RGB")
                scale = size / max(img.size)  # fit the cell, small images enlarged
                img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                                 Image.NEAREST if scale > 1 else Image.LANCZOS)
                sheet.paste(img, (left, top))
            except Exception as ex:  # an image that cannot be fetched is named, the sheet still written
                draw.text((left + 4, top + size // 2), f"image unavailable: {str(ex)[:40]}", fill="red")
            draw.text((left, top + size + 2), f"{w}: {record_score(rec, e):+.4f}", fill="black")
        draw.text((pad, top + size + 15), f"#{i} {label}: {records[(x, i)]['prompt'][:80]}", fill="black")
    sheet.save(path)
    return True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name)


def fetch_image(rec: Mapping, timeout: float = 30.0) -> bytes:
    if not rec.get("images"):
        raise JobError("the job recorded no image")
    im = rec["images"][0]
    return ComfyClient(rec["server"], request_timeout=timeout, connect_retries=0).view(
        im["filename"], im.get("subfolder", ""), im.get("type", "output"))


def write_report(rep: dict, records: Mapping, out_dir: str, contact: int = 4,
                 fetch: Callable[[Mapping], bytes] = fetch_image) -> list[str]:
    """report.json, report.md, winrate.png and the contact sheets (first estimator) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    written, figures = [], []
    if plot_win_rates(rep, os.path.join(out_dir, "winrate.png")):
        figures.append("winrate.png")
    if contact > 0 and rep["estimators"]:
        for p in rep["pairs"]:
            if p["estimator"] != rep["estimators"][0]:
                continue
            name = f"contact_{_safe(p['x'])}_vs_{_safe(p['y'])}.png"
            if contact_sheet(p, records, os.path.join(out_dir, name), fetch, contact):
                figures.append(name)
    rep["figures"] = figures
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(rep, f, indent=1, ensure_ascii=False)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(report_markdown(rep))
    written += ["report.json", "report.md"] + figures
    return [os.path.join(out_dir, n) for n in written]


# --------------------------------------------------------------------------- command line

def _schema_defaults(client: ComfyClient, class_type: str, skip: Sequence[str]) -> dict:
    """Widget defaults of a node's required inputs from the server's /object_info."""
    status, body = client._call("GET", f"/object_info/{class_type}")
    if status != 200 or not isinstance(body, Mapping) or class_type not in body:
        raise ValueError(f"{client.base_url}: no {class_type} node (is ComfyUI-Reflect installed there?)")
    out = {}
    for name, spec in ((body[class_type].get("input") or {}).get("required") or {}).items():
        if name in skip or not isinstance(spec, list) or not spec:
            continue
        t, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {})
        if isinstance(t, list):
            out[name] = opts.get("default", t[0] if t else None)
        elif t == "COMBO":
            out[name] = opts.get("default", (opts.get("options") or [None])[0])
        elif t in ("INT", "FLOAT", "BOOLEAN", "STRING"):
            out[name] = opts.get("default", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[t])
    return out


def parse_estimators(specs: Sequence[str] | None) -> list[tuple[str, str]]:
    out = []
    for s in specs or ["imagereward"]:
        est, _, weights = s.partition("=")
        if not est.strip():
            raise ValueError(f"--estimator {s!r}: expected NAME or NAME=WEIGHTS")
        out.append((est.strip(), weights.strip() or "default"))
    if len({e for e, _ in out}) != len(out):
        raise ValueError("--estimator: each estimator once")
    return out


def parse_sweep(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--cfg-sweep {text!r}: expected numbers separated by commas, e.g. 3,5,7,9") from None
    if not vals:
        raise ValueError("--cfg-sweep: no values")
    return vals


def workflow_name(spec: str) -> str:
    """``dir/zsampling_sdxl.json:9`` -> ``zsampling_sdxl:9``."""
    path, _, sink = spec.rpartition(":") if not os.path.exists(spec) and ":" in spec else (spec, "", "")
    return os.path.splitext(os.path.basename(path))[0] + (f":{sink}" if sink else "")


def plan_workflows(files: Sequence[str], names: Sequence[str] | None, baseline: str | None,
                   sweep: Sequence[float], load: Callable[[str], dict] = read_workflow):
    """``(graphs, roles)`` in report order: the baseline, its cfg variants
    (``<baseline>@cfg<v>``), then the methods."""
    if len(files) < 2:
        raise ValueError("--workflow: give at least two workflows (the baseline first)")
    names = list(names or [])
    if names and len(names) != len(files):
        raise ValueError("--name: one per --workflow")
    names = names or [workflow_name(f) for f in files]
    seen = {}
    for j, n in enumerate(names):
        if n in seen:
            seen[n] += 1
            names[j] = f"{n}#{seen[n]}"
        else:
            seen[n] = 1
    graphs = {n: load(f) for n, f in zip(names, files)}
    base = baseline or names[0]
    if base not in graphs:
        raise ValueError(f"--baseline {base!r}: not one of {names}")
    order = {base: graphs[base]}
    roles = {base: "baseline"}
    for v in sweep:
        n = f"{base}@cfg{v:g}"
        order[n] = with_cfg(graphs[base], v)
        roles[n] = "sweep"
    for n in names:
        if n != base:
            order[n], roles[n] = graphs[n], "method"
    return order, roles


DESCRIPTION = ("Paired win rates of two or more API-format workflows on a prompt set, scored inside ComfyUI servers "
               "with the pack's quality estimators.")
EPILOG = ("Example (Z-Sampling protocol, DrawBench first 100 prompts, seed = prompt index): python -m tools.evaluate "
          "--workflow workflows/api/zsampling_sdxl.json:11 --workflow workflows/api/zsampling_sdxl.json:9 "
          "--name standard --name zsampling --prompt-input 3.text "
          "--prompts datasets/drawbench.csv -n 100 --estimator imagereward --estimator hpsv2.1 --cfg-sweep 3,5,7,9 "
          "--server http://127.0.0.1:8188 --out eval_zsampling")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.evaluate", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--workflow", action="append", required=True, metavar="FILE[:NODE]",
                   help="API-format workflow with {prompt}; repeat (the first is the baseline); FILE:NODE keeps only "
                        "what output node NODE needs")
    p.add_argument("--prompt-input", metavar="NODE.INPUT",
                   help="set this input (e.g. 3.text) to {prompt} in every workflow that has it")
    p.add_argument("--name", action="append", help="a name per --workflow (default: the file names)")
    p.add_argument("--baseline", help="name of the baseline workflow (default: the first)")
    add_run_arguments(p)
    p.add_argument("--estimator", action="append", metavar="NAME[=WEIGHTS]",
                   help="imagereward (default), pickscore, hpsv2.1, aesthetic; repeat; =WEIGHTS picks a weights file")
    p.add_argument("--precision", help="estimator precision (default: the loader's, fp32)")
    p.add_argument("--download", help="the loader's download choice (default: the loader's)")
    p.add_argument("--cfg-sweep", metavar="V,V,...", help="matched-guidance baselines: the baseline at these cfg")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (report.md/json, PNGs)")
    p.add_argument("--state", metavar="FILE.jsonl", help="JSONL state to resume from (default: OUT/state.jsonl)")
    p.add_argument("--report-only", action="store_true", help="write the report from the state file, run nothing")
    p.add_argument("--contact", type=int, default=4, help="prompts per side in the contact sheets (0: none)")
    a = p.parse_args(argv)

    from tools.reflect_pack import module
    read_prompts = module("samplers.adaptive").read_prompts
    state = a.state or os.path.join(a.out, "state.jsonl")
    t0 = time.monotonic()
    try:
        prompts = read_prompts(a.prompts, a.limit, a.column)
        estimators = parse_estimators(a.estimator)
        graphs, roles = plan_workflows(a.workflow, a.name, a.baseline, parse_sweep(a.cfg_sweep),
                                       lambda f: read_workflow(f, a.prompt_input))
        servers = server_urls(a.server or ["http://127.0.0.1:8188"])
        if a.report_only:
            records, failed = read_state(state, prompts, graphs)
            pending = [(w, i) for i in range(len(prompts)) for w in roles if (w, i) not in records]
        else:
            loader, gate = None, None
            for u in servers:
                try:
                    c = ComfyClient(u, connect_retries=0)
                    loader = _schema_defaults(c, LOADER, ("estimator", "weights"))
                    gate = _schema_defaults(c, GATE, ("image_reward", "images", "prompt"))
                    break
                except ServerUnreachable:
                    continue
            if loader is None:
                raise ValueError(f"no server answered: {', '.join(servers)}")
            if a.precision:
                loader["precision"] = a.precision
            if a.download:
                loader["download"] = a.download
            result = run_evaluation(graphs, prompts, servers, estimators, state, a.base_seed, a.retries,
                                    lambda u: ComfyClient(u, poll_interval=a.poll, job_timeout=a.timeout),
                                    not a.no_progress, loader, gate)
            records, failed, pending = result.records, result.failed, result.pending
            for u, n in result.per_server.items():
                print(f"  {u}: {n} jobs this run" + (f" (dropped: {result.dropped[u]})" if u in result.dropped
                                                     else ""))
    except ValueError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 2
    meta = {"prompts": a.prompts, "base_seed": a.base_seed, "state": state,
            "files": dict(zip(a.name or [workflow_name(f) for f in a.workflow], a.workflow))}
    rep = build_report(records, roles, [e for e, _ in estimators], len(prompts), failed, meta)
    rep["pending"] = [list(k) for k in pending]
    written = write_report(rep, records, a.out, a.contact)
    print(f"jobs: {len(records)}/{len(prompts) * len(roles)} scored, {len(failed)} failed, {len(pending)} not run; "
          f"{time.monotonic() - t0:.1f} s")
    for pr in rep["pairs"]:
        ci = "-" if pr["ci"] is None else f"[{pr['ci'][0]:.3f}, {pr['ci'][1]:.3f}]"
        print(f"  {pr['x']} vs {pr['y']} ({pr['estimator']}): win rate {_f(pr['win_rate'])} {ci}, "
              f"{pr['wins']}/{pr['losses']}/{pr['ties']} w/l/t, diff {_f(pr['mean_diff'], '{:+.4f}')}")
    print("wrote " + ", ".join(written))
    return 0 if not (failed or pending) else 1


if __name__ == "__main__":
    sys.exit(main())

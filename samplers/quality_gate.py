"""The quality gate of the adaptive student-teacher scheme (Starodubcev et al.
2023): thresholds, percentile tables and the pass/fail split of a batch by
its quality scores (the estimators themselves live in ``scoring/``).

The gate: a sample passes when its score is at least the threshold ``tau``; a
threshold is a number or the k-th entry of a percentile table ``{k: value}``
(k = 10..90, as the adaptive paper's ``IR_percentiles_*.json``) made from the
student's scores on a calibration prompt set.
"""

from __future__ import annotations

import json
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

PERCENTILE_KS = tuple(range(10, 100, 10))


DEFAULT_ESTIMATOR = "imagereward"  # a table that names no estimator is ImageReward's (the paper's tables)


def percentile_table(scores: Iterable[float], ks: Sequence[int] = PERCENTILE_KS, estimator: str | None = None,
                     weights: str | None = None) -> dict:
    """``{k: the k-th percentile of scores}`` (linear interpolation, numpy's
    default, as the adaptive reference computes its tables). With
    ``estimator`` (and ``weights``, the weights file that scored), the table
    records them: ``{"estimator": ..., "weights": ..., "percentiles": {k: value}}``."""
    s = np.asarray(list(scores), dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError("scores: a percentile table needs at least one score, all finite")
    table = {str(int(k)): float(np.percentile(s, k)) for k in ks}
    if estimator is None:
        return table
    return {"estimator": str(estimator), "weights": str(weights or ""), "percentiles": table}


def _load_json(table, source: str):
    if isinstance(table, (str, bytes)):
        try:
            return json.loads(table)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
    return table


def table_info(table, source: str = "percentile_table") -> dict:
    """``{"estimator", "weights", "percentiles": {int k: float}}`` of a table:
    a recorded one as written, a plain ``{k: value}`` one as ImageReward's
    (the shipped paper tables; weights unknown, "")."""
    table = _load_json(table, source)
    if isinstance(table, Mapping) and "percentiles" in table:
        est = table.get("estimator")
        if not isinstance(est, str) or not est:
            raise ValueError(f"{source}: a table with 'percentiles' must name its 'estimator'")
        return {"estimator": est, "weights": str(table.get("weights") or ""),
                "percentiles": parse_table(table["percentiles"], source)}
    return {"estimator": DEFAULT_ESTIMATOR, "weights": "", "percentiles": parse_table(table, source)}


def check_table_estimator(table, estimator: str, weights: str = "", source: str = "percentiles") -> dict:
    """``table_info(table)``, refused with a ValueError naming both estimators
    when it was made with another estimator than the one scoring now."""
    info = table_info(table, source)
    if info["estimator"] != estimator:
        made = info["estimator"] + (f" ({info['weights']})" if info["weights"] else "")
        raise ValueError(f"{source}: this percentile table was made with the {made} estimator, the images are "
                         f"scored with {estimator}" + (f" ({weights})" if weights else "") +
                         "; thresholds of one estimator mean nothing on another's scale (calibrate this "
                         "estimator, or load its table)")
    return info


def parse_table(table, source: str = "percentile_table") -> dict[int, float]:
    """A percentile table (JSON text or mapping ``{k: value}``, or a recorded
    table ``{"estimator", "weights", "percentiles"}``) as ``{int k: float}``, checked."""
    table = _load_json(table, source)
    if isinstance(table, Mapping) and "percentiles" in table:
        table = table["percentiles"]
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{source}: expected a JSON object {{k: value}} with k = 10..90, got {type(table).__name__}")
    out = {}
    for k, v in table.items():
        try:
            kk, vv = int(str(k)), float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: entry {k!r}: {v!r} is not a percentile k and a number") from None
        if not (0 <= kk <= 100) or not math.isfinite(vv):
            raise ValueError(f"{source}: entry {k!r}: {v!r}: k must be in 0..100 and the value finite")
        out[kk] = vv
    return out


def threshold_from_table(table, k: int, source: str = "percentile_table") -> float:
    """tau = the table's k-th percentile; a clear error when the table lacks k."""
    t = parse_table(table, source)
    if int(k) not in t:
        raise ValueError(f"k: {int(k)} is not in {source} (it has k = {', '.join(str(x) for x in sorted(t))})")
    return t[int(k)]


def gate(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pass mask (B,) bool: score >= threshold (below it, a sample goes to the teacher)."""
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold: {threshold} is not a finite number")
    return scores >= float(threshold)


def split_indices(passed: torch.Tensor) -> tuple[list[int], list[int]]:
    """Indices of the passed and of the failed samples, each in batch order."""
    p = passed.tolist()
    return [i for i, ok in enumerate(p) if ok], [i for i, ok in enumerate(p) if not ok]


def merge(passed_items: torch.Tensor | None, failed_items: torch.Tensor | None, passed_idx: Sequence[int],
          failed_idx: Sequence[int]) -> torch.Tensor:
    """The batch in its original order from its passed and failed parts (inverse of splitting by indices)."""
    n = len(passed_idx) + len(failed_idx)
    parts = [(passed_items, list(passed_idx), "passed"), (failed_items, list(failed_idx), "failed")]
    ref = next((t for t, idx, _ in parts if idx), None)
    if ref is None:
        raise ValueError("merge: both parts are empty")
    out = ref.new_empty((n, *ref.shape[1:]))
    for items, idx, name in parts:
        if not idx:
            continue
        if items is None or items.shape[0] != len(idx):
            got = 0 if items is None else items.shape[0]
            raise ValueError(f"{name}: {got} items for {len(idx)} {name} samples")
        if items.shape[1:] != ref.shape[1:]:
            raise ValueError(f"{name}: items of shape {tuple(items.shape[1:])}, the other part has {tuple(ref.shape[1:])}")
        out[idx] = items.to(out)
    return out

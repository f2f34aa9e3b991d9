"""Metrics from the measuring classifier: accuracy on the prompted digit
(alignment), Frechet distance in the classifier's 64-d feature space against the
real training images (fidelity, "FD"), with standard errors. Pure torch (float64
eigendecompositions), no scipy."""

from __future__ import annotations

import torch


@torch.no_grad()
def classify(classifier, x: torch.Tensor, batch: int = 1000):
    """(logits, features) of images ``x`` (clamped to [-1, 1])."""
    logits, feats = [], []
    for b in range(0, len(x), batch):
        xb = x[b:b + batch].clamp(-1, 1)
        f = classifier.features(xb)
        feats.append(f)
        logits.append(classifier.head(f))
    return torch.cat(logits), torch.cat(feats)


def stats(features: torch.Tensor):
    f = features.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet(mu1, s1, mu2, s2, sqrt_s2: torch.Tensor | None = None) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2) (``sqrt_s2``: S2^1/2 if known)."""
    r2 = _sqrtm_psd(s2) if sqrt_s2 is None else sqrt_s2
    m = r2 @ s1 @ r2
    tr_cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_cross)


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    return frechet(*stats(f1), *stats(f2))


class Reference:
    """Feature statistics of the real data, with S^1/2 computed once."""

    def __init__(self, features: torch.Tensor):
        self.mu, self.sigma = stats(features)
        self.sqrt = _sqrtm_psd(self.sigma)

    def fd(self, features: torch.Tensor) -> float:
        return frechet(*stats(features), self.mu, self.sigma, self.sqrt)


def bootstrap_indices(n: int, reps: int = 100, seed: int = 0) -> torch.Tensor:
    """(reps, n) resampling indices, shared by every method of a run so that
    differences between methods on the same seeds are paired."""
    return torch.randint(0, n, (reps, n), generator=torch.Generator().manual_seed(seed))


def bootstrap_fds(features: torch.Tensor, ref: Reference, indices: torch.Tensor) -> torch.Tensor:
    """FD of each resample (reps,): its std is the FD's standard error; the std
    of the difference of two methods' vectors is the paired difference's."""
    return torch.tensor([ref.fd(features[idx]) for idx in indices], dtype=torch.float64)


def mean_se(values: torch.Tensor):
    v = values.double()
    return float(v.mean()), float(v.std() / max(1, len(v)) ** 0.5) if len(v) > 1 else 0.0

"""Hidden-state geometry: cosine similarity between consecutive layers and a 2D PCA. Pure."""
from __future__ import annotations

import torch


def cosine_consecutive(hidden: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity between layer l and l+1 for every token.

    hidden: (L+1, T, H) -> (L, T). `last` (T, H), when given, stands in for hidden[L] (the last
    layer's output before the final norm, where hidden[L] is after it).
    """
    n = hidden.shape[0] - 1
    out = torch.empty(n, hidden.shape[1], dtype=torch.float32)  # (L, T)
    for layer in range(n):  # one layer pair at a time: temporaries stay (T, H), not (L, T, H)
        upper = last if last is not None and layer + 1 == n else hidden[layer + 1]
        a, b = hidden[layer].float(), upper.float()  # (T, H)
        out[layer] = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8).cpu()
    return out


def pca_2d(x: torch.Tensor, fit_start: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Project rows of x (N, D) onto the first two principal components of x[fit_start:].

    All rows are projected; only rows from fit_start on shape the components (so an outlier such
    as an attention-sink first token, whose norm dwarfs the rest, does not take the whole picture).
    Returns (coords (N, 2), explained variance ratio of each component over the fitted rows).
    Signs are fixed so that the largest-magnitude loading of each component is positive,
    which keeps the picture stable between calls.
    """
    x = x.double()
    n = x.shape[0]
    fit = x[fit_start:] if n - fit_start >= 2 else x  # (M, D)
    if fit.shape[0] < 2:
        return torch.zeros(n, 2), [0.0, 0.0]
    mean = fit.mean(0, keepdim=True)  # (1, D)
    centred = fit - mean  # (M, D)
    if centred.shape[0] > centred.shape[1]:  # many tokens: eigh of the (D, D) scatter matrix is cheaper
        evals, evecs = torch.linalg.eigh(centred.T @ centred)  # ascending: (D,), (D, D)
        var = evals.flip(0).clamp_min(0)  # (D,) = squared singular values
        vh = evecs.flip(1).T  # (D, D), rows are components
    else:
        _, sv, vh = torch.linalg.svd(centred, full_matrices=False)  # sv: (M,), vh: (M, D)
        var = sv**2
    comps = vh[:2]  # (2, D)
    idx = comps.abs().argmax(1)
    signs = torch.sign(comps[torch.arange(comps.shape[0]), idx])
    signs[signs == 0] = 1
    comps = comps * signs.unsqueeze(1)
    coords = (x - mean) @ comps.T  # (N, 2)
    total = float(var.sum().item())
    ratios = [float(v / total) if total > 0 else 0.0 for v in var[:2].tolist()]
    while len(ratios) < 2:
        ratios.append(0.0)
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(n, 2 - coords.shape[1], dtype=coords.dtype)], 1)
    return coords.float(), ratios

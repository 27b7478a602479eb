"""How a speculative verifier decides: greedy, the stochastic rule of Leviathan et al. (2023), or a forced draw.

Every rule sees a batch of R rows, each with k_i <= k draft tokens and the target's logits at the k_i + 1 verified
positions (greedy: host lists of drafts and of the target's argmaxes; stochastic: tensors [R, k] and [R, k + 1, V]
padded to k) (position j predicts the token after draft j-1;
position 0 predicts the first draft). It returns (accepted drafts a_i in 0..k_i, the target's own next token y_i);
the row then commits draft[:a_i] + [y_i], i.e. a_i + 1 tokens.

- greedy: accept while draft j equals the target's argmax at j; y = the argmax at a (the "bonus" token when a = k).
  Output equals greedy AR decoding token for token (the property the tests check).
- stochastic (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023 call it speculative sampling): accept draft j
  with probability min(1, p_t(x_j) / p_d(x_j)); at the first rejection sample y from the normalized residual
  max(0, p_t - p_d); when all k_i are accepted sample the bonus y from p_t at position k_i. The committed tokens are
  then distributed exactly as samples of the target (Theorem 1 there); the tests check the first token's law.
- forced: a_i is a seeded draw from the truncated geometric law P(a >= j) = alpha^j, a <= k_i (the law sim's
  Speculative strategy assumes), y = the target's argmax at a. Random weights never agree with a draft, so timing
  runs at a chosen acceptance rate use this mode: the same passes are computed, only the decision is replaced,
  and results say `acceptance: forced`.
"""

from __future__ import annotations

import numpy as np
import torch

MODES = ("greedy", "stochastic", "forced")


def _valid(k_i: torch.Tensor, k: int) -> torch.Tensor:
    """[R, k] bool: draft j of row i exists (j < k_i)."""
    return torch.arange(k, device=k_i.device)[None, :] < k_i[:, None]


def greedy(drafts: list[list[int]], best: list[list[int]]) -> tuple[list[int], list[int]]:
    """Per row: the longest prefix of its drafts equal to the target's argmax (`best`, k_i + 1 positions), and the
    argmax after it. Plain lists: the verifier brings the argmaxes to the host in one transfer."""
    accepted = []
    for d, b in zip(drafts, best):
        a = 0
        while a < len(d) and d[a] == b[a]:
            a += 1
        accepted.append(a)
    return accepted, [b[a] for b, a in zip(best, accepted)]


def stochastic(draft: torch.Tensor, k_i: torch.Tensor, p_draft: torch.Tensor, p_target: torch.Tensor,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Leviathan et al. 2023, Algorithm 1. `p_draft` [R, k, V] is the distribution each draft token was sampled
    from, `p_target` [R, k + 1, V] the target's (both already softmaxed, same temperature)."""
    R, k = draft.shape
    if k:
        pt = p_target[:, :k].gather(-1, draft[..., None])[..., 0]  # [R, k]
        pd = p_draft.gather(-1, draft[..., None])[..., 0]
        u = torch.rand((R, k), generator=gen, device=gen.device).to(pt.device)
        ok = (u * pd < pt) & _valid(k_i, k)  # u < p_t / p_d, written without a division by a tiny p_d
        accepted = ok.long().cumprod(dim=1).sum(dim=1)
    else:
        accepted = torch.zeros(R, dtype=torch.long, device=draft.device)
    rows = torch.arange(R, device=draft.device)
    target_at = p_target[rows, accepted]  # [R, V]: the target's distribution where y is drawn
    rejected = accepted < k_i
    dist = target_at.clone()
    if rejected.any():
        a = accepted[rejected]
        residual = (target_at[rejected] - p_draft[rows[rejected], a]).clamp(min=0)
        total = residual.sum(-1, keepdim=True)
        # residual mass 0 only when p_d >= p_t everywhere, i.e. p_d = p_t; then rejection had probability 0
        dist[rejected] = torch.where(total > 0, residual / total.clamp(min=1e-30), target_at[rejected])
    y = torch.multinomial(dist.float().cpu(), 1, generator=_cpu(gen))[:, 0].to(draft.device)
    return accepted, y


_CPU_GENS: dict[int, torch.Generator] = {}


def _cpu(gen: torch.Generator) -> torch.Generator:
    """multinomial on CPU tensors needs a CPU generator; derive one per device generator (seeded from it)."""
    if gen.device.type == "cpu":
        return gen
    key = id(gen)
    if key not in _CPU_GENS:
        _CPU_GENS[key] = torch.Generator().manual_seed(int(gen.initial_seed()))
    return _CPU_GENS[key]


def forced(k_i: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Accepted drafts drawn from P(a >= j) = alpha^j truncated at k_i (so P(a = n) = alpha^n (1 - alpha) for
    n < k_i and alpha^k_i for n = k_i): the law DESIGN §4 states and sim/strategies/speculative.py draws from."""
    k_i = np.asarray(k_i, dtype=np.int64)
    if alpha <= 0:
        return np.zeros_like(k_i)
    if alpha >= 1:
        return k_i.copy()
    u = 1.0 - rng.random(len(k_i))  # (0, 1]
    return np.minimum(np.floor(np.log(u) / np.log(alpha)).astype(np.int64), k_i)


def histogram(accepted: list[int] | np.ndarray, k: int) -> list[int]:
    """Counts of accepted drafts 0..k (one entry per verify of a row that drafted)."""
    return np.bincount(np.asarray(accepted, dtype=np.int64), minlength=k + 1)[: k + 1].tolist()

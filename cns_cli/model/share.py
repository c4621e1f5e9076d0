"""One rank's part of a data-parallel learn (`cns learn` under torchrun / accelerate launch: learning/parallel.py).

Every rank draws the whole global batch from the same seeded generator (images, timesteps, noise: the draws of one
process with that `--batch-size`) and computes only its contiguous slice of it (distributed.split). Its loss is
weighted by its share of the batch, so the ranks' losses and gradients add up to the one-process mean; the sums
travel in one all-reduce per step. In one process there is no BatchShare (None) and none of this code runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchShare:
    rank: int
    size: int

    @classmethod
    def of_this_rank(cls) -> BatchShare | None:
        """This rank's share under a launcher, None in one process."""
        from .. import distributed as dist

        return cls(dist.rank(), dist.size()) if dist.launched() else None

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of `n` (contiguous; every rank has at least one when n >= size)."""
        from ..distributed import split

        r = split(n, self.rank, self.size)
        return slice(r.start, r.stop)

    def weight(self, n: int) -> float:
        """This rank's share of a global batch of `n`: its mean loss times this adds up to the global mean."""
        part = self.rows(n)
        return (part.stop - part.start) / n

    def leads(self) -> bool:
        """Whether this rank adds the batch-independent terms (a penalty on the trainables): one rank, once."""
        return self.rank == 0

    def sum_(self, tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tensor summed over the ranks, in one all-reduce of one flat float32 vector (a missing gradient
        counts as zeros shaped like its parameter in `like`). Returns new tensors, in `like`'s dtypes."""
        from .. import distributed as dist

        parts = [(t if t is not None else torch.zeros_like(p)).detach().float().flatten() for t, p in zip(tensors, like)]
        total = dist.all_reduce_sum([torch.cat(parts)])[0]
        out, at = [], 0
        for p in like:
            out.append(total[at : at + p.numel()].view_as(p).to(p.dtype))
            at += p.numel()
        return out

    def sum_grads_(self, params: list[torch.Tensor], loss: torch.Tensor) -> float:
        """Replace each parameter's gradient with its sum over the ranks, and return the summed loss (the global
        batch's). One all-reduce: the loss rides along as the last number."""
        scalar = loss.detach().float().reshape(1)
        summed = self.sum_([p.grad for p in params] + [scalar], [*params, scalar])
        for p, g in zip(params, summed[:-1]):
            p.grad = g.to(p.device)
        return float(summed[-1])

"""The training order: a function of the seed and the epoch only, so that a run stopped part-way through an epoch
continues with exactly the batches, and the augmentations, the uninterrupted run would have drawn next.

``EpochSampler`` yields ``(row, augmentation seed)`` pairs. The shuffle (or the class-balanced draw) and each
position's augmentation seed come from a generator seeded with ``seed + epoch``, never from the global RNG, so they
do not depend on what else drew from it (dropout, DataLoader iterators, workers) or on how many workers load the
batches; ``resume(epoch, start)`` skips the positions an interrupted run already trained on. Under DDP it is the
``DistributedSampler`` Lightning would otherwise put in its place: every rank draws the same order and takes its
own positions, so the ranks' batches of a step together are the batch one process would train on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

_SEED_BOUND = 2**31 - 1  # albumentations seeds numpy's and python's generators with it


class EpochSampler(DistributedSampler):
    """Shuffled (``weights=None``) or weighted-with-replacement indices of ``size`` rows, each paired with the seed of
    its augmentation, the same for a given ``seed`` and epoch in every run."""

    def __init__(
        self,
        size: int,
        seed: int,
        weights: Sequence[float] | torch.Tensor | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            range(size),  # only its length is used
            num_replicas=num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1,
            rank=rank if rank is not None else dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=seed,
        )
        self.size = size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self._start: tuple[int, int] | None = None  # (epoch, positions of this rank to skip), for one iteration

    def resume(self, epoch: int, start: int) -> None:
        """The next iteration is epoch ``epoch`` from this rank's position ``start`` on (the first ``start`` were
        trained before the run was stopped)."""
        self.set_epoch(epoch)
        self._start = (epoch, start)

    def order(self, epoch: int) -> list[tuple[int, int]]:
        """Every position of ``epoch`` for every rank: (row, augmentation seed)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        if self.weights is None:
            rows = torch.randperm(self.size, generator=generator)
        else:
            rows = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        seeds = torch.randint(0, _SEED_BOUND, (self.size,), generator=generator)
        pairs = list(zip(rows.tolist(), seeds.tolist(), strict=True))
        padding = self.total_size - len(pairs)  # as DistributedSampler does: every rank gets as many
        return pairs + (pairs * math.ceil(padding / len(pairs)))[:padding] if padding > 0 else pairs

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = self.order(self.epoch)[self.rank : self.total_size : self.num_replicas]
        start, self._start = (self._start[1] if self._start and self._start[0] == self.epoch else 0), None
        return iter(mine[start:])

    def __len__(self) -> int:
        return self.num_samples

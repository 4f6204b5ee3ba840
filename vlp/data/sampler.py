"""A DistributedSampler that can start mid-epoch, for exact resume."""

from __future__ import annotations

from torch.utils.data.distributed import DistributedSampler


class ResumableSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled by seed + epoch, one shard per rank; also used
    with one replica), skipping the first `start` indices of this rank's shard."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start

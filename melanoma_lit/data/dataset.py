"""A torch Dataset over the image table: decoded, transformed, uint8 images with targets and masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from melanoma_lit.data.images import load_rgb
from melanoma_lit.data.metadata import MetadataEncoder
from melanoma_lit.data.table import known_mask, targets


class LesionDataset(Dataset):
    """Holds plain arrays, not the DataFrame, so that workers fork and pickle cheaply."""

    def __init__(
        self,
        table: pd.DataFrame,
        classes: Sequence[str],
        transform: Callable[..., dict],
        decode_side: int | None = None,
        metadata: MetadataEncoder | None = None,
    ) -> None:
        """``metadata``: the encoder of a model fusing patient metadata; its rows travel as ``metadata``."""
        self.image_ids = table["image_id"].to_numpy(dtype=str)
        self.paths = table["path"].to_numpy(dtype=str)
        self.targets = torch.from_numpy(targets(table, classes))
        self.known = torch.from_numpy(known_mask(table, classes))
        self.transform = transform
        self.decode_side = decode_side
        self.metadata = torch.from_numpy(metadata.encode(table)) if metadata else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``item``: a row, or (row, augmentation seed) as the training sampler (data.sampling) gives them."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        image: np.ndarray = load_rgb(self.paths[index], min_side=self.decode_side)
        if hasattr(self.transform, "set_random_seed"):
            # A transform keeps its own RNG, blind to seed_everything and copied unchanged into every DataLoader
            # worker. Seeding it per sample, with the seed the training sampler drew for this position of the epoch
            # (else from torch's RNG, which the DataLoader seeds per worker and epoch), makes augmentations
            # reproducible, resumable and distinct across workers.
            self.transform.set_random_seed(int(torch.randint(0, 2**31, ()).item()) if seed is None else int(seed))
        sample = {
            **self.transform(image=image),  # image, and training's photometric parameters
            "target": self.targets[index],
            "known": self.known[index],
            "index": torch.tensor(index),
        }
        return sample if self.metadata is None else {**sample, "metadata": self.metadata[index]}

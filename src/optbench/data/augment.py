"""Batched on-device augmentation: the CIFAR recipe RandomCrop(32, padding=4) + RandomHorizontalFlip as a
single gather over the whole batch, instead of a per-image PIL pipeline in worker processes.

Each image gets its own crop offset (dy, dx) in [0, 2 * padding] and flip bit, drawn from the ``torch.Generator``
passed in (so an epoch is reproducible from the trainer's seed and resumes exactly). The padded image is
never materialised: a row/column index outside the image reads from a zero border appended once per batch.
Works on any dtype; applied to the raw uint8 images (before normalisation) the border is black, exactly as
torchvision pads the PIL image before ``Normalize``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip_params(batch: int, padding: int, generator: torch.Generator, flip: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (dy, dx, flipped) drawn on the generator's device: offsets into the padded image, in
    [0, 2 * padding], and a fair coin for the flip."""
    device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
    if flip:
        flipped = torch.randint(0, 2, (batch,), generator=generator, device=device).bool()
    else:
        flipped = torch.zeros(batch, dtype=torch.bool, device=device)
    return offsets[0], offsets[1], flipped


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor, padding: int
              ) -> torch.Tensor:
    """x [B, C, H, W] -> the [B, C, H, W] windows at (dy, dx) of x zero-padded by ``padding``, mirrored left-right
    where ``flipped``. One gather: the source pixel of output (i, j) is (i + dy - padding, j' + dx - padding)
    with j' = W - 1 - j for flipped images."""
    b, c, h, w = x.shape
    device = x.device
    dy, dx, flipped = dy.to(device), dx.to(device), flipped.to(device)
    ar_h = torch.arange(h, device=device)
    ar_w = torch.arange(w, device=device)
    rows = dy[:, None] + ar_h - padding  # [B, H] in [-padding, H + padding)
    cols = torch.where(flipped[:, None], w - 1 - ar_w, ar_w) + dx[:, None] - padding  # [B, W]
    # pad only the far sides: negative indices then wrap onto the zero border too
    hp, wp = h + padding, w + padding
    padded = F.pad(x, (0, padding, 0, padding))
    # flat index of (b, c, row, col) in the padded batch, built in int32 (half the bytes of int64; a batch
    # is far below 2**31 elements) and read with one index_select
    rows = (rows % hp).int()
    cols = (cols % wp).int()
    planes = torch.arange(b * c, device=device, dtype=torch.int32).view(b, c, 1) * hp  # [B, C, 1]
    index = (planes + rows[:, None, :]).mul_(wp).unsqueeze(-1) + cols[:, None, None, :]  # [B, C, H, W]
    return padded.reshape(-1).index_select(0, index.reshape(-1)).view(b, c, h, w)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
                     ) -> torch.Tensor:
    """RandomCrop(H, padding) + RandomHorizontalFlip for a whole batch [B, C, H, W] on its device."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    dy, dx, flipped = crop_flip_params(x.shape[0], padding, generator, flip)
    return crop_flip(x, dy, dx, flipped, padding)

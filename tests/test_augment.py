"""Batched crop + flip: every output is a translated (and possibly mirrored) window of the zero-padded image,
the random draws have the right distribution, and everything follows the generator."""

import pytest
import torch
import torch.nn.functional as F

from optbench.data.augment import crop_flip, crop_flip_params, random_crop_flip


def reference_crop_flip(x, dy, dx, flipped, padding):
    """Per image, the obvious way: pad, slice, mirror."""
    padded = F.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    out = []
    for i in range(len(x)):
        window = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(window.flip(-1) if flipped[i] else window)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_crops_are_translations_of_the_padded_image(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 32, 32), generator=g).to(dtype)
    dy, dx, flipped = crop_flip_params(64, 4, g)
    out = crop_flip(x, dy, dx, flipped, 4)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(out, reference_crop_flip(x, dy, dx, flipped, 4))


def test_extreme_offsets_and_non_square_images():
    x = torch.arange(2 * 1 * 5 * 7, dtype=torch.float32).view(2, 1, 5, 7) + 1
    dy = torch.tensor([0, 4])
    dx = torch.tensor([4, 0])
    flipped = torch.tensor([True, False])
    out = crop_flip(x, dy, dx, flipped, 2)
    assert torch.equal(out, reference_crop_flip(x, dy, dx, flipped, 2))
    # the centre offset without flip is the identity
    centre = torch.full((2,), 2)
    assert torch.equal(crop_flip(x, centre, centre, torch.zeros(2, dtype=torch.bool), 2), x)


def test_the_border_is_black_and_its_size_matches_the_offset():
    x = torch.full((200, 3, 32, 32), 255, dtype=torch.uint8)
    g = torch.Generator().manual_seed(1)
    dy, dx, _ = crop_flip_params(200, 4, g)
    out = crop_flip(x, dy, dx, torch.zeros(200, dtype=torch.bool), 4)
    visible = (out[:, 0] == 255).sum((1, 2))
    assert torch.equal(visible, (32 - (dy - 4).abs()) * (32 - (dx - 4).abs()))
    assert set(out.unique().tolist()) == {0, 255}


def test_flip_ratio_and_offsets_are_uniform():
    g = torch.Generator().manual_seed(2)
    n = 90_000
    dy, dx, flipped = crop_flip_params(n, 4, g)
    assert abs(flipped.float().mean().item() - 0.5) < 0.01  # 6 standard deviations
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9  # only 0..8
        assert (counts.float() / n - 1 / 9).abs().max() < 0.01
    assert abs(torch.corrcoef(torch.stack([dy.float(), dx.float()]))[0, 1].item()) < 0.02


def test_flip_can_be_disabled():
    g = torch.Generator().manual_seed(3)
    _, _, flipped = crop_flip_params(1000, 4, g, flip=False)
    assert not flipped.any()


def test_deterministic_under_a_seed_and_independent_of_global_rng():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    a = random_crop_flip(x, torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = random_crop_flip(x, torch.Generator().manual_seed(5))
    c = random_crop_flip(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_negative_padding_is_rejected():
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.zeros(1, 1, 4, 4), torch.Generator(), padding=-1)


def test_task_batches_are_augmented_before_normalisation(mini_cifar_dir):
    """Through the CIFAR task: training batches follow the generator, and the crop's border is black
    (normalises to -mean/std, as torchvision's pad-then-Normalize), not zero after normalisation."""
    from optbench.tasks.classification import ImageClassification

    cfg = {"name": "cifar10", "dataset": "cifar10", "model": "resnet20", "batch_size": 45, "augment": "crop_flip",
           "val_fraction": 0.1}
    task = ImageClassification(cfg, str(mini_cifar_dir), torch.device("cpu"))
    (x1, y1), = task.train_batches(torch.Generator().manual_seed(0))
    (x2, y2), = task.train_batches(torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    black = (-torch.tensor([0.4914, 0.4822, 0.4465]) / torch.tensor([0.2023, 0.1994, 0.2010])).view(3, 1)
    corners = torch.stack([x1[:, :, 0, 0], x1[:, :, 0, -1], x1[:, :, -1, 0], x1[:, :, -1, -1]], 2)  # [B, 3, 4]
    # an image shifted by a nonzero offset in both axes has one black corner
    is_black = torch.isclose(corners, black.expand(45, 3, 1).expand(45, 3, 4), atol=1e-5).all(1)
    assert is_black.any(1).float().mean() > 0.5

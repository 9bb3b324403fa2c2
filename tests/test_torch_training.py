"""A PyTorch user's training loop on a built dataset: the README's "Train with PyTorch", run."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from cutout_etl import open_dataset, pipeline
from cutout_etl.demo import write_demo_files
from cutout_etl.transform import FluxTransform


def small_cnn(bands: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(bands, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def test_a_small_cnn_learns_from_a_dataloader_with_two_workers(tmp_path):
    out = tmp_path / "dataset.h5"
    pipeline.build(write_demo_files(tmp_path / "demo", rows=300, seed=0), out)
    torch.manual_seed(0)
    ds = open_dataset(out)
    transform = FluxTransform.from_dataset(ds)  # the stored training constants
    loader = DataLoader(
        ds["train"], batch_size=64, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    model = small_cnn(len(ds.bands), len(ds.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    epoch_losses = []
    for _ in range(2):
        losses = []
        for images, labels in loader:
            x = torch.from_numpy(transform(images.numpy())).permute(0, 3, 1, 2)  # NHWC -> NCHW
            loss = nn.functional.cross_entropy(model(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
    assert epoch_losses[1] < epoch_losses[0]

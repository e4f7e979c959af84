"""DDP on CPUs (issue 15): Lightning DDP over gloo, 2 processes x mini-batch 4 against 1 process x 8.

The loss is a mean over images and DDP averages the processes' gradients, so the two give the same first-step
gradient wherever normalisation does not depend on the mini-batch: with BatchNorm frozen, or with BatchNorm over
the global batch (``train.sync_batchnorm``: models/layers/global_bn.py on CPUs). Without it each process
normalises its 4 images alone: the documented difference. float64 keeps the comparison far from the noise floor
(train-mode BatchNorm on a random network amplifies float32 rounding to percents; reports/bench/gpu.json).
"""

from __future__ import annotations

from types import SimpleNamespace

import hydra
import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader

from bagof.callbacks import CmBN
from bagof.data.detection import collate
from bagof.errors import BagofError
from bagof.models.layers.global_bn import GlobalBatchNorm2d, convert_global_bn
from bagof.train import build_task


class FirstStep(L.Callback):
    """Saves rank 0's gradients (after DDP's all-reduce) and BatchNorm running statistics at the first step."""

    def __init__(self, path, freeze_bn: bool):
        self.path, self.freeze_bn = path, freeze_bn

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.freeze_bn:
            for m in pl_module.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_rank == 0:
            grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}
            stats = {n: b.detach().clone() for n, b in pl_module.named_buffers() if "running_" in n}
            torch.save({"grads": grads, "stats": stats}, self.path)


class Fixed(L.LightningDataModule):
    def __init__(self, samples, batch_size):
        super().__init__()
        self.samples, self.batch_size = samples, batch_size

    def train_dataloader(self):  # under DDP Lightning shards it: rank 0 gets 0, 2, 4, 6 and rank 1 the others
        return DataLoader(self.samples, batch_size=self.batch_size, shuffle=False, collate_fn=collate)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from bagof.config import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["scale=smoke", "data.img_size=64", "logger=none"])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("validate")  # the validation images: no augmentation, the same tensors in every run
    samples = [dm.val_set[i] for i in range(8)]
    assert sum(len(s[1]) for s in samples) > 0
    return cfg, samples, tmp_path_factory.mktemp("ddp")


def first_step(setup, name: str, devices: int, sync_bn: bool = False, freeze_bn: bool = False) -> dict:
    cfg, samples, folder = setup
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    if sync_bn:
        convert_global_bn(model)
    task = build_task(cfg, model, hydra.utils.instantiate(cfg.loss))
    path = folder / f"{name}.pt"
    # spawn, not fork: a CUDA build of torch refuses autograd in a child forked after a backward (this process ran
    # earlier tests' backwards), whether or not a GPU is there
    strategy = DDPStrategy(process_group_backend="gloo", start_method="spawn") if devices > 1 else "auto"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        precision="64-true",
        max_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FirstStep(path, freeze_bn)],
    )
    trainer.fit(task, datamodule=Fixed(samples, 8 // devices))
    return torch.load(path)


def rel(a: dict, b: dict) -> float:
    fa = torch.cat([a[n].flatten() for n in a])
    fb = torch.cat([b[n].flatten() for n in a])
    return ((fa - fb).norm() / fa.norm()).item()


def test_ddp_2x4_gives_the_gradient_of_1x8_with_frozen_or_global_batchnorm(setup):
    one = first_step(setup, "one-frozen", 1, freeze_bn=True)
    two = first_step(setup, "two-frozen", 2, freeze_bn=True)
    assert rel(one["grads"], two["grads"]) < 1e-9

    one = first_step(setup, "one", 1)
    synced = first_step(setup, "two-sync", 2, sync_bn=True)
    alone = first_step(setup, "two-alone", 2)
    assert rel(one["grads"], synced["grads"]) < 1e-7
    assert rel(one["stats"], synced["stats"]) < 1e-9  # running statistics of the global batch
    # without it: each process's BatchNorm saw 4 of the 8 images; gradient and statistics are another step's
    assert rel(one["grads"], alone["grads"]) > 1e-3 and rel(one["stats"], alone["stats"]) > 1e-3


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn, gbn = nn.BatchNorm2d(3), GlobalBatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(bn(x), gbn(x)) and torch.equal(bn.running_var, gbn.running_var)


def test_cmbn_refuses_ddp_naming_the_alternatives():
    trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2)
    with pytest.raises(BagofError, match="train.devices=1.*train.sync_batchnorm=true"):
        CmBN().setup(trainer, SimpleNamespace(model=nn.Sequential(nn.BatchNorm2d(3))), "fit")

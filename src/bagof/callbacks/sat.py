"""SAT, Self-Adversarial Training (REFERENCE.md "SAT").

Before a training step (on ``prob`` of the steps once the warm-up is over), the network, with its
weights frozen and BatchNorm/DropBlock in eval mode, alters its own input: one gradient step on the
image that lowers the loss against an *empty* ground truth, i.e. makes the detections disappear.
The normal training step then runs on the altered image with the original labels.

Step size: our choice, as REFERENCE.md gives only ``adversarial_lr`` (~0.05) and not how the raw input
gradient is scaled. The gradient's size depends on the loss normaliser and the batch, so the step is
normalised per image so that the largest pixel change is ``step`` (in [0, 1] image units), which makes
the setting mean the same at every scale. Pixels are clipped to [0, 1].
"""

from __future__ import annotations

import math

import lightning as L
import torch


def adversarial_images(task, imgs: torch.Tensor, step: float) -> torch.Tensor:
    """One input step of SAT's first pass; leaves parameters, their gradients and BN statistics untouched."""
    model = task.model
    was_training = {m: m.training for m in model.modules()}
    grads_enabled = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        x = imgs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss, _ = task.compute_loss(x, imgs.new_zeros((0, 6)))
            (g,) = torch.autograd.grad(loss, x)
    finally:
        for m, mode in was_training.items():
            m.training = mode
        for p, flag in zip(model.parameters(), grads_enabled):
            p.requires_grad_(flag)
    scale = g.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return (x.detach() - step * g / scale).clamp_(0, 1)


class SelfAdversarial(L.Callback):
    def __init__(self, step: float = 0.05, prob: float = 0.5, start: float | int = 0):
        self.step, self.prob, self.start = step, prob, start  # start: warm-up steps, or a fraction of training

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        start = self.start
        if isinstance(start, float) and start < 1:
            start = math.ceil(start * max(1, int(trainer.estimated_stepping_batches)))
        if trainer.global_step < start or torch.rand(()).item() >= self.prob:
            return
        imgs = batch[0]
        imgs.copy_(adversarial_images(pl_module, imgs, self.step))  # the training step sees this tensor

"""Semantics of the training-time Bag-of-Freebies toggles: CmBN, DM / random shapes, MixUp, CutMix, blur,
DropBlock, SAT, the GA placeholder; and all of them composed in one real run."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bagof.callbacks import CmBN, SelfAdversarial
from bagof.callbacks.sat import adversarial_images
from bagof.data.mixing import CutMix, MixUp
from bagof.data.multiscale import MultiScaleBatchSampler
from bagof.data.transforms import build_train_transform
from bagof.models.layers.cmbn import CmBatchNorm2d, convert_cmbn
from bagof.models.specials.dropblock import DropBlock2d
from bagof.train import train


# ---- CmBN -------------------------------------------------------------------------------------------
def _bn_by_hand(x, weight, bias, eps):
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def test_cmbn_statistics_are_those_of_the_concatenated_earlier_minibatches():
    torch.manual_seed(0)
    bn = CmBatchNorm2d(3)
    nn.init.uniform_(bn.weight, 0.5, 2)
    nn.init.uniform_(bn.bias, -1, 1)
    xs = [torch.randn(4, 3, 5, 5) * s + s for s in (1.0, 3.0, 0.5)]
    for t, x in enumerate(xs):
        y = bn(x)
        seen = torch.cat(xs[: t + 1])  # mini-batches 1..t of this batch
        expected = (x - seen.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            seen.var((0, 2, 3), unbiased=False, keepdim=True) + bn.eps
        )
        expected = expected * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        assert torch.allclose(y, expected, atol=1e-5)
    bn.reset()  # a new batch: the first mini-batch is plain BN again
    assert torch.allclose(bn(xs[2]), _bn_by_hand(xs[2], bn.weight, bn.bias, bn.eps), atol=1e-5)
    bn.eval()  # eval: the running statistics
    assert torch.allclose(
        bn(xs[0]),
        nn.functional.batch_norm(xs[0], bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps),
    )


def test_cmbn_gradient_flows_through_the_current_minibatch_only():
    bn = CmBatchNorm2d(2)
    a = torch.randn(4, 2, 3, 3, requires_grad=True)
    b = torch.randn(4, 2, 3, 3, requires_grad=True)
    bn(a).sum().backward()
    (bn(b) ** 2).sum().backward()  # a's graph is gone: only b and the affine parameters get gradients here
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_cmbn_gradient_is_darknets_bn_backward_with_the_accumulated_statistics():
    """Mini-batch 2 of a batch: ``darknet`` gives Darknet's normalize_delta with the accumulated mean and variance,
    dx = gamma / (N sigma) (N dy - sum dy - x_hat sum(dy x_hat)) per channel, N the mini-batch's elements;
    ``exact`` is the derivative of the forward (the current mini-batch's 1/t share; checked numerically)."""
    torch.manual_seed(0)
    a = torch.randn(4, 2, 3, 3, dtype=torch.float64) * 2 + 1
    b = (torch.randn(4, 2, 3, 3, dtype=torch.float64) + 3).requires_grad_()
    dy = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    bn = CmBatchNorm2d(2, stats_dtype="float64").double()
    nn.init.uniform_(bn.weight, 0.5, 2)
    bn(a)
    (bn(b) * dy).sum().backward()
    seen = torch.cat([a, b.detach()])
    mu, var = seen.mean((0, 2, 3), keepdim=True), seen.var((0, 2, 3), unbiased=False, keepdim=True)
    sigma, n = torch.sqrt(var + bn.eps), b[:, 0].numel()
    x_hat = (b.detach() - mu) / sigma
    expected = (n * dy - dy.sum((0, 2, 3), keepdim=True) - x_hat * (dy * x_hat).sum((0, 2, 3), keepdim=True)) / (
        n * sigma
    )
    assert torch.allclose(b.grad, expected * bn.weight.detach().view(1, -1, 1, 1), atol=1e-10)

    exact = CmBatchNorm2d(2, stats_dtype="float64", grad="exact").double()

    def second(x):
        exact.reset()
        exact(a)
        return exact(x)

    assert torch.autograd.gradcheck(second, (b.detach().clone().requires_grad_(),))
    b.grad = None
    (second(b) * dy).sum().backward()
    assert not torch.allclose(b.grad, expected * exact.weight.detach().view(1, -1, 1, 1), atol=1e-3)  # they differ
    with pytest.raises(ValueError, match="grad='autograd'.*darknet"):
        CmBN(grad="autograd")


def test_convert_cmbn_shares_parameters_and_the_callback_resets_per_batch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    w = model[1].weight
    convert_cmbn(model)
    assert isinstance(model[1], CmBatchNorm2d) and isinstance(model[2][0], CmBatchNorm2d) and model[1].weight is w
    trainer = SimpleNamespace(accumulate_grad_batches=2)
    task = SimpleNamespace(model=model)
    cb = CmBN()
    for batch_idx in range(4):
        cb.on_train_batch_start(trainer, task, None, batch_idx)
        assert model[1]._steps == batch_idx % 2  # reset at mini-batches 0 and 2, where a batch starts
        model(torch.randn(2, 3, 6, 6))


def test_cmbn_under_bfloat16_autocast_normalises_as_batchnorm_does():
    """The statistics are float32 whatever the activations' dtype (the reference's BN is float32): in bfloat16,
    E[x^2] - E[x]^2 cancels to noise when the mean is large against the spread (0.4.0 gave outputs of sd ~30)."""
    torch.manual_seed(0)
    xs = [torch.randn(4, 6, 8, 8) * 0.2 + 3.0 + t for t in range(2)]  # a mean far from zero, as after a conv
    bn, cm = nn.BatchNorm2d(6), CmBatchNorm2d(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y0 = cm(xs[0].bfloat16())
        y1 = cm(xs[1].bfloat16())
        ref0 = bn(xs[0].bfloat16())
    assert y0.dtype == torch.bfloat16  # as BatchNorm: bfloat16 in, bfloat16 out
    assert torch.allclose(y0.float(), ref0.float(), atol=0.05)  # mini-batch 1: plain BN
    seen = torch.cat([x.bfloat16().float() for x in xs])  # mini-batch 2: the statistics of 1..2
    expected = (xs[1].bfloat16().float() - seen.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        seen.var((0, 2, 3), unbiased=False, keepdim=True) + cm.eps
    )
    assert torch.allclose(y1.float(), expected, atol=0.05)


def test_cmbn_statistics_dtype_is_an_option_naming_the_choices():
    # a mean 1e6 times the spread: float32 statistics cancel, float64 ones normalise it (output still float32)
    x = (1e4 + 0.01 * torch.randn(4, 2, 5, 5, dtype=torch.float64)).float()
    y = CmBatchNorm2d(2, stats_dtype="float64")(x)
    x64 = x.double()
    ref = (x64 - x64.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        x64.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    assert y.dtype == torch.float32 and torch.allclose(y.double(), ref, atol=1e-3)
    with pytest.raises(ValueError, match="stats_dtype.*float32"):
        CmBN(stats_dtype="bfloat16")


# ---- DM / random shapes -------------------------------------------------------------------------------
def test_dynamic_minibatch_keeps_pixels_per_step_constant():
    s = MultiScaleBatchSampler(
        1000, batch_size=8, img_size=256, every=10, scale_range=(0.7, 1.4), dynamic_batch=True, seed=3
    )
    assert s.sizes == [192, 224, 256, 288, 320, 352]
    plan = s.plan(0)
    assert len(plan) == len(s) and len({size for b in plan for _, size, _ in b}) > 2
    assert all(epoch == 0 for b in plan for _, _, epoch in b)  # the keys carry their epoch (data/sampling.py)
    for k, batch in enumerate(plan[:-1]):
        size = batch[0][1]
        assert all(sz == size for _, sz, _ in batch)
        assert len(batch) == round(8 * 256**2 / size**2)
        # constant pixels per step, up to rounding the batch to an integer
        assert abs(len(batch) * size**2 - 8 * 256**2) <= size**2 / 2
        if k % 10:
            assert size == plan[k - 1][0][1]  # the size changes only every 10 mini-batches
    idx = [i for b in plan for i, _, _ in b]
    assert len(idx) == len(set(idx))  # each image at most once per epoch
    assert s.plan(1) != plan and s.plan(0) == plan  # a new draw per epoch, reproducible


def test_random_shapes_keep_the_batch_size():
    s = MultiScaleBatchSampler(200, batch_size=8, img_size=256, every=1, dynamic_batch=False, seed=0)
    assert {len(b) for b in s.plan(0)} == {8}
    assert len({b[0][1] for b in s.plan(0)}) > 1


def test_dataset_resizes_a_sample_to_the_drawn_size(compose):
    import hydra

    cfg = compose(["scale=smoke", "+bof=dynamic_minibatch"])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    ds = dm.train_set
    ds.transform = None
    img0, t0, _ = ds[0]
    img, t, _ = ds[(0, 192)]
    assert img0.shape[1:] == (128, 128) and img.shape[1:] == (192, 192)
    assert torch.allclose(t[:, 1:], t0[:, 1:] * 1.5) and torch.equal(t[:, 0], t0[:, 0])
    loader = dm.train_dataloader()
    sizes = {imgs.shape[-1]: len(imgs) for imgs, _, _ in loader}
    assert all(s % 32 == 0 for s in sizes) and len(loader) == len(loader.batch_sampler)


# ---- MixUp, CutMix, blur ----------------------------------------------------------------------------
def _sample(value, box, label):
    img = np.full((64, 64, 3), value, np.uint8)
    return img, np.array([box], np.float32), np.array([label])


def test_mixup_blends_pixels_and_keeps_both_box_sets():
    a, b = _sample(100, [0, 0, 10, 10], 0), _sample(200, [20, 20, 40, 40], 1)
    img, boxes, labels = MixUp(p=1.0)(a, lambda: b, np.random.default_rng(0))
    assert (img == 150).all()
    assert boxes.tolist() == [[0, 0, 10, 10], [20, 20, 40, 40]] and labels.tolist() == [0, 1]
    same = MixUp(p=0.0)(a, lambda: b, np.random.default_rng(0))
    assert same[0] is a[0]
    img, _, _ = MixUp(p=1.0, alpha=1.0)(a, lambda: b, np.random.default_rng(1))
    assert len(np.unique(img)) == 1 and 100 <= img[0, 0, 0] <= 200


def test_cutmix_pastes_a_patch_and_cuts_boxes_to_it():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = _sample(10, [0, 0, 64, 64], 0)  # covers everything: never hidden enough to drop
        b = (
            np.full((64, 64, 3), 250, np.uint8),
            np.array([[0, 0, 64, 64], [60, 60, 64, 64]], np.float32),
            np.array([1, 2]),
        )
        img, boxes, labels = CutMix(p=1.0, min_visibility=0.0)(a, lambda: b, rng)
        ys, xs = np.nonzero(img[..., 0] == 250)
        if len(xs) == 0:
            continue
        patch = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert (img[patch[1] : patch[3], patch[0] : patch[2]] == 250).all() and (img == 250).sum() == 3 * len(xs)
        assert labels[0] == 0 and boxes[0].tolist() == [0, 0, 64, 64]
        assert boxes[1].tolist() == patch  # b's full-image box cut to the pasted patch
    # a box of the first image hidden by the patch is dropped under min_visibility
    a = _sample(10, [30, 30, 34, 34], 0)
    b = (np.full((64, 64, 3), 250, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    cut = CutMix(p=1.0, min_visibility=0.25)
    rng = np.random.default_rng(5)
    for _ in range(30):
        img, boxes, labels = cut(a, lambda: b, rng)
        hidden = (img[30:34, 30:34, 0] == 250).mean()
        assert (len(boxes) == 1) == (1 - hidden >= 0.25)


def test_blur_smooths_the_image_and_keeps_boxes():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, ::2] = 255  # stripes: blurring pulls every pixel towards grey
    boxes = np.array([[8, 8, 40, 40]], np.float32)
    t = build_train_transform(hue=0, saturation=1, exposure=1, flip=0, scale=0, translate=0, blur=1.0)
    out = t(image=img, bboxes=boxes, labels=np.array([0]))
    assert np.abs(out["image"].astype(float) - 127.5).mean() < 0.5 * np.abs(img.astype(float) - 127.5).mean()
    assert np.allclose(out["bboxes"], boxes)


# ---- DropBlock ----------------------------------------------------------------------------------------
def test_dropblock_drops_whole_blocks_at_the_target_rate():
    torch.manual_seed(0)
    drop = DropBlock2d(drop_prob=0.1, block_size=5).train()
    x = torch.ones(8, 16, 64, 64)
    y = drop(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.02  # gamma gives the target dropped fraction
    kept = y[~dropped]
    assert torch.allclose(kept, kept[0].expand_as(kept)) and kept[0] > 1  # survivors rescaled to keep the mean
    # every dropped unit lies in a fully dropped 5x5 square
    d = dropped.float().view(-1, 1, 64, 64)
    eroded = -nn.functional.max_pool2d(-d, 5, 1, 2)  # units whose 5x5 neighbourhood is all dropped
    covered = nn.functional.max_pool2d(eroded, 5, 1, 2) > 0  # ... and the squares around them
    assert covered[d.bool()].all()
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    drop.progress = 0.0  # start of the linear ramp
    assert torch.equal(drop(x), x)
    assert DropBlock2d(0.1, 7).train()(torch.ones(2, 4, 4, 4)).shape == (2, 4, 4, 4)  # block clipped to the map


# ---- SAT ----------------------------------------------------------------------------------------------
def _task(compose):
    import hydra

    from bagof.tasks import DetectionTask

    cfg = compose(["scale=smoke"])
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    return DetectionTask(
        model, hydra.utils.instantiate(cfg.loss), cfg.train.optimizer, cfg.train.scheduler, cfg.train.postprocess
    ).train()


def test_sat_changes_the_image_not_the_weights_and_hides_objects(compose):
    task = _task(compose)
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 128, 128) * 0.3
    imgs[:, :, 40:90, 30:80] = 0.9  # one bright square per image: teach the detector to see it
    targets = torch.tensor([[0, 0, 30, 40, 80, 90], [1, 0, 30, 40, 80, 90]], dtype=torch.float32)
    opt = torch.optim.AdamW(task.parameters(), lr=0.01)
    for _ in range(25):
        opt.zero_grad()
        task.compute_loss(imgs, targets)[0].backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    params = {k: v.clone() for k, v in task.state_dict().items()}
    adv = adversarial_images(task, imgs, step=0.05)
    assert not torch.equal(adv, imgs) and (adv - imgs).abs().max() <= 0.05 + 1e-6
    for k, v in task.state_dict().items():  # weights and BN statistics untouched
        assert torch.equal(v, params[k]), k
    assert all(p.grad is None for p in task.parameters()) and task.training and task.model.training
    task.eval()
    with torch.no_grad():

        def obj(x):  # objectness logits per image, and the loss against an empty truth (what SAT lowers)
            return (
                torch.cat([o[..., 4].flatten(1) for o in task.model(x)], 1),
                task.compute_loss(x, x.new_zeros((0, 6)))[0],
            )

        (before, loss_before), (after, loss_after) = obj(imgs), obj(adv)
    assert before.amax(1).min() > 0  # it does detect the squares (objectness > 0.5)
    assert (after.amax(1) < before.amax(1)).all() and loss_after < loss_before  # the detections fade


def test_sat_callback_alters_the_batch_in_place_after_warm_up(compose):
    task = _task(compose)
    imgs = torch.rand(2, 3, 128, 128)
    batch = (imgs, torch.zeros(0, 6), [{}, {}])
    before = imgs.clone()
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=100)
    SelfAdversarial(step=0.05, prob=1.0, start=0.5).on_train_batch_start(trainer, task, batch, 0)
    assert torch.equal(imgs, before)  # still in the warm-up (50 of 100 steps)
    trainer.global_step = 50
    SelfAdversarial(step=0.05, prob=1.0, start=0.5).on_train_batch_start(trainer, task, batch, 0)
    assert not torch.equal(imgs, before)


# ---- GA placeholder, and everything at once -------------------------------------------------------------
def test_ga_applies_the_search_result_to_the_optimizer(compose):
    from omegaconf import OmegaConf

    from bagof.config import CONFIG_DIR

    found = OmegaConf.load(f"{CONFIG_DIR}/hparams/ga-bccd-cpu.yaml")
    cfg = compose(["+bof=ga", "data=bccd"])
    assert cfg.train.optimizer.lr == found.train.optimizer.lr and cfg.loss.box_weight == found.loss.box_weight
    assert cfg.data.augment.hue == found.data.augment.hue and cfg.features.ga == "hyperparameters"
    task = _task(compose)
    task.opt_cfg = dict(cfg.train.optimizer)
    task._trainer = None
    trainer = SimpleNamespace(estimated_stepping_batches=10)
    type(task).trainer = property(lambda self: trainer)
    try:
        opt = task.configure_optimizers()["optimizer"]
    finally:
        del type(task).trainer
    assert opt.defaults["lr"] == pytest.approx(found.train.optimizer.lr)
    assert opt.defaults["betas"][0] == pytest.approx(found.train.optimizer.momentum)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(found.train.optimizer.weight_decay)


def test_all_training_freebies_compose_and_train(compose, tmp_path):
    cfg = compose(
        [
            "scale=smoke",
            "train.accumulate=2",
            "data.batch_size=2",
            "logger=none",
            "+bof=[cmbn,dynamic_minibatch,mixup,cutmix,blur,dropblock,sat,ga,mosaic,ciou,ema]",
            "train.callbacks.sat.prob=1.0",
        ]
    )
    ap = train(cfg)
    assert 0.0 <= ap <= 1.0


def test_two_input_shape_toggles_conflict(compose):
    from bagof.features import FeatureConflict, check_features

    with pytest.raises(FeatureConflict, match="dynamic_minibatch and random_shapes"):
        check_features(compose(["+bof=[dynamic_minibatch,random_shapes]"]))


def test_ga_must_precede_the_toggles_whose_keys_it_tunes(compose, tmp_path, monkeypatch):
    """A GA result that tunes the anchor IoU threshold must not silently replace IT's 0.213."""
    from bagof.features import FeatureConflict, check_features

    with pytest.raises(FeatureConflict, match="list ga first"):
        check_features(compose(["+bof=[iou_thresh,ga]"]))
    check_features(compose(["+bof=[ga,iou_thresh]"]))  # the toggle comes last and wins
    check_features(compose(["+bof=[mosaic,ga]"]))  # no shared key: any order


# ---- EMA --------------------------------------------------------------------------------------------
def test_ema_follows_the_ramped_decay_is_evaluated_and_kept():
    import math

    import lightning as L

    from bagof.callbacks import EMA

    class Walk(L.LightningModule):  # w grows by exactly 1 per step (SGD, lr 1, d loss / d w = -1)
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, i):
            return -self.w.sum()

        def validation_step(self, batch, i):
            self.seen.append(float(self.w))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    data = torch.utils.data.DataLoader(torch.zeros(5, 1), batch_size=1)
    model, ema = Walk(), EMA(decay=0.9, tau=2.0)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data, data)
    expected = None
    for n, w in enumerate(range(1, 6)):  # weights after steps 1..5; the first update copies them
        d = 0.9 * (1 - math.exp(-n / 2.0))
        expected = float(w) if expected is None else d * expected + (1 - d) * w
    assert model.seen and all(v == pytest.approx(expected) for v in model.seen)  # validation saw the EMA
    assert model.w.item() == pytest.approx(expected) and expected < 5  # and the model keeps it

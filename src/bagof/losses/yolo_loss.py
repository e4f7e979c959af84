"""YOLOv3/v4 loss (REFERENCE.md "IT", "Loss weights", "Box loss").

Per image the Darknet way: objectness BCE over every cell (negatives whose predicted box overlaps a
truth by more than ``ignore_thresh`` are ignored), class BCE and the box loss at the cells/anchors a
truth is assigned to; summed per image and averaged over the batch (Darknet divides the learning
rate by the batch, which is the same thing).

Assignment: a truth goes to the anchor (of all nine) with the best shape IoU, at the cell holding
its centre; with ``iou_thresh < 1`` every other anchor whose shape IoU exceeds it is assigned too.

Centre gradient (``xy_grad``): Darknet's yolo layer writes the delta ``scale * (t_x - x)`` of the
activated centre ``x = s * sigmoid(raw) - (s - 1) / 2`` straight into the raw output's gradient, without
the sigmoid's derivative (backward_yolo_layer copies the delta; no gradient_array for x, y), and so does
its IoU-loss delta. ``darknet`` (default: the reference) reproduces that with a straight-through estimator
(the value of ``x``, the gradient of ``raw``); ``sigmoid`` backpropagates through the sigmoid as autograd
would (up to 4/s times smaller gradients).

Gaussian YOLO (``gaussian=True``, Table 5 "G"; Choi et al. 2019): the head also predicts sigma for
each of tx, ty, tw, th (a sigmoid), and the box term is the negative log-likelihood per coordinate as the
reference's gaussian_yolo layer (delta_gaussian_yolo_box) differentiates it:
``1/2 (2 - w h) -log(N + 1e-9)``, ``N = exp(-(t - mu)^2 / (2 sigma^2)) / (sqrt(2 pi) (sigma + 0.3))``: the
density's normaliser carries ``sigma_const`` 0.3 (it bounds the reward for shrinking sigma, which a plain
``log sigma`` does not), the 1/2 and the small-box scale are the reference's ``temp``. Sigma's gradient is
weighted by ``uc_weight`` (the cfg's uc_normalizer, 1.0), not by ``box_weight`` (iou_normalizer), and with
``xy_grad=darknet`` goes to the raw output without the sigmoid's derivative, as the centre's does. With
MSE the NLL also trains mu (weighted by ``box_weight``; logged as ``box``, sigma's part as ``uc``); with an
IoU loss the IoU loss trains the box and the NLL trains sigma only (mu detached), as the reference does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.boxes import bbox_iou, box_iou, cxcywh_to_xyxy, decode_boxes, wh_iou

BOX_LOSSES = ("mse", "iou", "giou", "diou", "ciou")


def smooth_labels(onehot: torch.Tensor, eps: float) -> torch.Tensor:
    """Sigmoid-form class label smoothing of the reference detector: y -> y (1 - eps) + 0.5 eps."""
    return onehot * (1 - eps) + 0.5 * eps


def gaussian_nll(
    t: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, sigma_const: float = 0.3, eps: float = 1e-9
) -> torch.Tensor:
    """Gaussian YOLO's box loss per truth: sum over the 4 coordinates of -log(N + eps), N the normal density
    of ``t`` around ``mu`` with ``sigma + sigma_const`` in its normaliser (the reference's; 0 gives the
    textbook density N(t | mu, sigma^2))."""
    pdf = torch.exp(-((t - mu) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * (sigma + sigma_const))
    return -torch.log(pdf + eps).sum(1)


class YoloLoss(nn.Module):
    def __init__(
        self,
        box: str = "mse",
        box_weight: float = 1.0,
        obj_weight: float = 1.0,
        cls_weight: float = 1.0,
        iou_thresh: float = 1.0,
        ignore_thresh: float = 0.7,
        label_smoothing: float = 0.0,
        gaussian: bool = False,
        xy_grad: str = "darknet",
        uc_weight: float = 1.0,
        sigma_const: float = 0.3,
    ):
        super().__init__()
        if box not in BOX_LOSSES:
            raise ValueError(f"loss.box={box!r}: choose one of {BOX_LOSSES}")
        if xy_grad not in ("darknet", "sigmoid"):
            raise ValueError(f"loss.xy_grad={xy_grad!r}: choose darknet (the reference) or sigmoid")
        self.xy_grad = xy_grad
        self.box, self.box_weight, self.obj_weight, self.cls_weight = box, box_weight, obj_weight, cls_weight
        self.iou_thresh, self.ignore_thresh, self.label_smoothing = iou_thresh, ignore_thresh, label_smoothing
        self.gaussian, self.uc_weight, self.sigma_const = gaussian, uc_weight, sigma_const

    def assign(self, targets: torch.Tensor, anchors: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each scale, (target index, anchor index within the scale) of every positive."""
        n_scales, na = anchors.shape[:2]
        twh = targets[:, 4:6] - targets[:, 2:4]
        ious = wh_iou(twh, anchors.view(-1, 2))  # (M, scales * na)
        best = ious.argmax(1)
        out = []
        for s in range(n_scales):
            cols = torch.arange(s * na, (s + 1) * na, device=targets.device)
            mask = best[:, None] == cols[None]
            if self.iou_thresh < 1.0:
                mask |= ious[:, cols] > self.iou_thresh
            t_idx, a_idx = mask.nonzero(as_tuple=True)
            out.append((t_idx, a_idx))
        return out

    def forward(
        self,
        outputs: list[torch.Tensor],
        targets: torch.Tensor,
        anchors: torch.Tensor,
        strides,
        scale_x_y: torch.Tensor,
    ):
        """``outputs``: raw maps (B, A, H, W, 5 + C); ``targets``: (M, 6) [image, class, x1, y1, x2, y2] in
        input pixels. Returns (total loss, dict of the parts)."""
        bs = outputs[0].shape[0]
        nc = outputs[0].shape[-1] - 5 - (4 if self.gaussian else 0)
        device = outputs[0].device
        img_size = outputs[0].shape[2] * strides[0]
        # Truth boxes per image, padded, for the ignore mask.
        counts = (
            torch.bincount(targets[:, 0].long(), minlength=bs) if len(targets) else torch.zeros(bs, dtype=torch.long)
        )
        tmax = int(counts.max()) if len(targets) else 0
        truth = torch.zeros(bs, max(tmax, 1), 4, device=device)
        if tmax:
            order = targets[:, 0].argsort(stable=True)
            t_sorted = targets[order]
            b = t_sorted[:, 0].long()
            slot = torch.arange(len(t_sorted), device=device) - torch.cumsum(counts, 0)[b] + counts[b]
            truth[b, slot] = t_sorted[:, 2:6]
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        luc = torch.zeros((), device=device)  # Gaussian YOLO's sigma term
        assignments = self.assign(targets, anchors) if len(targets) else [None] * len(outputs)
        for s, (p, assigned) in enumerate(zip(outputs, assignments)):
            _, na, h, w, _ = p.shape
            stride = strides[s]
            xy, wh = decode_boxes(p[..., :4], anchors[s], stride, scale_x_y[s])
            obj_target = torch.zeros(p.shape[:4], device=device)
            obj_weight = torch.ones_like(obj_target)
            if tmax:
                with torch.no_grad():  # ignore negatives already overlapping a truth well
                    pred_xyxy = cxcywh_to_xyxy(torch.cat([xy, wh], -1)).view(bs, -1, 4)
                    best_iou = torch.stack(
                        [
                            box_iou(pred_xyxy[i], truth[i, : counts[i]]).amax(1)
                            if counts[i]
                            else pred_xyxy.new_zeros(pred_xyxy.shape[1])
                            for i in range(bs)
                        ]
                    )
                    obj_weight[best_iou.view_as(obj_weight) > self.ignore_thresh] = 0.0
            if assigned is not None and len(assigned[0]):
                t_idx, a_idx = assigned
                t = targets[t_idx]
                bi, cls = t[:, 0].long(), t[:, 1].long()
                cxcy = (t[:, 2:4] + t[:, 4:6]) / 2
                twh = t[:, 4:6] - t[:, 2:4]
                gx = (cxcy[:, 0] / stride).long().clamp(0, w - 1)
                gy = (cxcy[:, 1] / stride).long().clamp(0, h - 1)
                ps = p[bi, a_idx, gy, gx]
                sxy = scale_x_y[s]
                act = sxy * ps[:, :2].sigmoid() - (sxy - 1) / 2  # the centre within its cell
                if self.xy_grad == "darknet":  # value of act, gradient passed to the raw output unchanged
                    act = ps[:, :2] + (act - ps[:, :2]).detach()
                mu = torch.cat([act, ps[:, 2:4]], 1)  # predicted tx, ty, tw, th
                t_coord = torch.cat(
                    [cxcy / stride - torch.stack([gx, gy], 1), torch.log(twh / anchors[s][a_idx] + 1e-9)], 1
                )
                scale = 2 - (twh[:, 0] * twh[:, 1]) / img_size**2  # Darknet: small boxes weigh more
                if self.gaussian:
                    raw = ps[:, 5 + nc : 9 + nc]
                    sigma = raw.sigmoid()
                    if self.xy_grad == "darknet":  # as the centre: the delta goes to the raw output unchanged
                        sigma = raw + (sigma - raw).detach()
                    temp = 0.5 * scale  # the reference's 1/2 x small-box scale
                    luc = luc + (temp * gaussian_nll(t_coord, mu.detach(), sigma, self.sigma_const)).sum()
                    if self.box == "mse":  # mu learns from the same NLL, weighted as a box term
                        nll = gaussian_nll(t_coord, mu, sigma.detach(), self.sigma_const)
                        lbox = lbox + (temp * nll).sum()
                if self.box == "mse" and not self.gaussian:
                    err = ((t_coord[:, :2] - mu[:, :2]) ** 2).sum(1) + ((t_coord[:, 2:] - mu[:, 2:]) ** 2).sum(1)
                    lbox = lbox + 0.5 * (scale * err).sum()
                elif self.box != "mse":
                    pxy = (torch.stack([gx, gy], 1).to(act) + act) * stride  # = decode_boxes' centre, same act
                    pbox = torch.cat([pxy, wh[bi, a_idx, gy, gx]], 1)
                    iou = bbox_iou(cxcywh_to_xyxy(pbox), t[:, 2:6], self.box)
                    lbox = lbox + (1 - iou).sum()
                obj_target[bi, a_idx, gy, gx] = 1.0
                obj_weight[bi, a_idx, gy, gx] = 1.0
                cls_target = smooth_labels(F.one_hot(cls, nc).float(), self.label_smoothing)
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5 : 5 + nc], cls_target, reduction="sum")
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], obj_target, obj_weight, reduction="sum")
        lbox, lobj, lcls = self.box_weight * lbox / bs, self.obj_weight * lobj / bs, self.cls_weight * lcls / bs
        parts = {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}
        if self.gaussian:
            luc = self.uc_weight * luc / bs
            parts["uc"] = luc.detach()
            return lbox + lobj + lcls + luc, parts
        return lbox + lobj + lcls, parts

"""Fast R-CNN (Girshick 2015) on an AlexNet-family trunk, built from torchvision's parts.

The trunk's conv1..conv5 (without conv5's max pool) run once per image; each proposal is
max-pooled (``torchvision.ops.roi_pool``) from conv5 to the side fc6 expects (6 x 6 for
``alexnet``, 3 x 3 for ``alexnet-small``), then goes through the trunk's fc6 and fc7 and two new
heads: a (classes + 1)-way classifier and per-class box regression.

Boxes are continuous ``(x1, y1, x2, y2)`` tensors (see :mod:`.proposals`). Sampling, encoding
and matching use torchvision's detection building blocks (``Matcher``,
``BalancedPositiveNegativeSampler``, ``BoxCoder`` with the standard weights ``(10, 10, 5, 5)``,
i.e. targets divided by ``(0.1, 0.1, 0.2, 0.2)``, py-faster-rcnn's fixed normalisation). On
top of that the model holds per-class ``target_mean`` / ``target_std`` (identity by default);
:func:`regression_stats` fills them as Fast R-CNN itself does (``roi_data_layer/roidb.py``:
means and standard deviations of the targets of every training RoI with IoU >= 0.5), the
targets are normalised with them in training and the predictions unnormalised in
:func:`detect`. The two normalisations compose to Fast R-CNN's, as both are affine per
coordinate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes, roi_pool

from ..backbones import CONV_STAGES, STAGES
from ..representation import Representation

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def box_coder() -> BoxCoder:
    """The (dx, dy, dw, dh) encoding of Fast R-CNN with the usual normalising weights."""
    return BoxCoder(BOX_WEIGHTS)


def conv5_stride(trunk) -> int:
    """Pixels per conv5 cell (before conv5's pool): the product of the strides on the way."""
    stride = 1
    for name in CONV_STAGES:
        stage = trunk.stage(name)
        for key, module in stage.named_children():
            if name == "conv5" and key == "pool":
                continue
            s = getattr(module, "stride", 1)
            stride *= s[0] if isinstance(s, tuple) else s
    return stride


@dataclass
class RoiSample:
    """The RoIs chosen for one training image: boxes, class labels (0 = background), targets."""

    boxes: torch.Tensor  # [R, 4] continuous
    labels: torch.Tensor  # [R] int64
    targets: torch.Tensor  # [R, 4] encoded regression targets (meaningful where labels > 0)


class RoiSampler:
    """Fast R-CNN's minibatch sampling for one image.

    A proposal is foreground when its best IoU with a ground-truth box is ``>= fg_iou``,
    background when it lies in ``[bg_low, fg_iou)``, ignored below ``bg_low``; up to
    ``fg_fraction`` of the ``rois_per_image`` are foreground, the rest background.
    """

    def __init__(self, rois_per_image: int = 64, fg_fraction: float = 0.25, fg_iou: float = 0.5,
                 bg_low: float = 0.1, coder: BoxCoder | None = None):
        self.matcher = Matcher(fg_iou, bg_low, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(rois_per_image, fg_fraction)
        self.coder = coder or box_coder()

    def labels_for(self, proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor):
        """Per proposal: its class (>= 1), 0 for background, -1 ignored; and the matched gt box."""
        if len(gt_boxes) == 0:
            return (torch.full((len(proposals),), -1, dtype=torch.int64, device=proposals.device),
                    torch.zeros_like(proposals))
        matched = self.matcher(box_iou(gt_boxes, proposals))
        labels = gt_labels[matched.clamp(min=0)].clone()
        labels[matched == Matcher.BETWEEN_THRESHOLDS] = 0  # IoU in [bg_low, fg_iou)
        labels[matched == Matcher.BELOW_LOW_THRESHOLD] = -1  # too far from any object
        return labels, gt_boxes[matched.clamp(min=0)]

    def __call__(self, proposals: torch.Tensor, gt_boxes: torch.Tensor,
                 gt_labels: torch.Tensor) -> RoiSample:
        labels, matched_boxes = self.labels_for(proposals, gt_boxes, gt_labels)
        pos, neg = self.sampler([labels])
        keep = torch.where(pos[0] | neg[0])[0]
        boxes = proposals[keep]
        return RoiSample(boxes, labels[keep], self.coder.encode_single(matched_boxes[keep], boxes))


class FastRCNN(nn.Module):
    """Shared conv1..conv5, RoI max pooling, fc6-fc7 of the representation, new heads.

    ``frozen_conv`` fixes conv1..conv5 (the ``fc6-8`` protocol).
    """

    def __init__(self, representation: Representation, n_classes: int, frozen_conv: bool = False):
        super().__init__()
        self.trunk = copy.deepcopy(representation.network)
        self.input = representation.input
        self.pool_size = self.trunk.spec.pool_out
        self.spatial_scale = 1.0 / conv5_stride(self.trunk)
        dim = self.trunk.out_dim
        self.register_buffer("target_mean", torch.zeros(n_classes + 1, 4))
        self.register_buffer("target_std", torch.ones(n_classes + 1, 4))
        self.cls_score = nn.Linear(dim, n_classes + 1)
        self.bbox_pred = nn.Linear(dim, 4 * (n_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.frozen = CONV_STAGES if frozen_conv else ()
        for name in self.frozen:
            for p in self.trunk.stage(name).parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            self.trunk.stage(name).eval()
        return self

    def conv5(self, x: torch.Tensor) -> torch.Tensor:
        """conv5 features (after its ReLU, before its pool) of a batch already in the
        representation's input convention (:func:`.batching.normalised_batch`)."""
        x = self.trunk.forward_to(x, "conv4")
        return self.trunk.conv5.relu(self.trunk.conv5.conv(x))

    def heads(self, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [R, C+1] and box deltas [R, 4(C+1)] of ``rois`` ([R, 5]: batch index, box)."""
        pooled = roi_pool(features, rois.to(features.dtype), self.pool_size, self.spatial_scale)
        h = self.trunk.fc7(self.trunk.fc6(torch.flatten(pooled, 1)))
        return self.cls_score(h), self.bbox_pred(h)

    def forward(self, x: torch.Tensor, rois: torch.Tensor):
        """Class logits and box deltas of ``rois`` in the normalised batch ``x``."""
        if self.frozen:
            with torch.no_grad():
                features = self.conv5(x)
        else:
            features = self.conv5(x)
        return self.heads(features, rois)

    def param_groups(self, representation: Representation, lr: float, lr_pretrained: float,
                     bias_lr_mult: float = 1.0, head_bias_decay: bool = True):
        """SGD groups: new layers (and random stages) at ``lr``, pretrained ones at
        ``lr_pretrained``; biases at ``bias_lr_mult`` times their layer's rate, and without
        weight decay in the two heads unless ``head_bias_decay`` (Fast R-CNN's CaffeNet
        train.prototxt: bias ``lr_mult: 2``, the heads' bias ``decay_mult: 0``)."""
        owners = [(self.cls_score, lr, True), (self.bbox_pred, lr, True)] + [
            (self.trunk.stage(name), (lr_pretrained or lr) if name in representation.learned_stages else lr,
             False) for name in STAGES]
        groups: dict[tuple[float, bool], list] = {}
        for module, rate, head in owners:
            for pname, p in module.named_parameters():
                if not p.requires_grad:
                    continue
                if pname.endswith("bias"):
                    key = (rate * bias_lr_mult, not (head and not head_bias_decay))
                else:
                    key = (rate, True)
                groups.setdefault(key, []).append(p)
        return [{"params": params, "lr": rate, **({} if decay else {"weight_decay": 0.0})}
                for (rate, decay), params in groups.items()]


def regression_stats(rois: list[torch.Tensor], gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor],
                     n_classes: int, coder: BoxCoder, iou: float = 0.5, flip: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means and standard deviations ``[n_classes + 1, 4]`` of the encoded targets of
    every RoI whose best IoU with a ground-truth box is >= ``iou``, each taking that box's
    class (Fast R-CNN's ``add_bbox_regression_targets``, BBOX_THRESH 0.5). ``flip`` adds every
    image's mirror image, as Fast R-CNN's flipped roidb does (dx changes sign). Rows of classes
    without such RoIs, and the background's, stay at mean 0, std 1."""
    sums = torch.zeros(n_classes + 1, 4, dtype=torch.float64)
    squares = torch.zeros_like(sums)
    counts = torch.zeros(n_classes + 1, 1, dtype=torch.float64)
    for boxes, gt, labels in zip(rois, gt_boxes, gt_labels):
        if len(gt) == 0 or len(boxes) == 0:
            continue
        best, match = box_iou(gt, boxes).max(0)
        keep = best >= iou
        targets = coder.encode_single(gt[match[keep]], boxes[keep]).double()
        classes = labels[match[keep]]
        if flip:
            targets = torch.cat([targets, targets * torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=targets.dtype)])
            classes = torch.cat([classes, classes])
        sums.index_add_(0, classes, targets)
        squares.index_add_(0, classes, targets ** 2)
        counts.index_add_(0, classes, torch.ones(len(classes), 1, dtype=torch.float64))
    seen = counts[:, 0] > 0
    seen[0] = False
    mean = torch.zeros_like(sums)
    std = torch.ones_like(sums)
    mean[seen] = sums[seen] / counts[seen]
    std[seen] = (squares[seen] / counts[seen] - mean[seen] ** 2).clamp(min=0).sqrt()
    std[std == 0] = 1.0  # a single RoI (or identical ones): nothing to divide by
    return mean.float(), std.float()


def fast_rcnn_loss(cls_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                   targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax loss over all RoIs plus smooth-L1 (beta 1) on the true class's deltas of the
    foreground RoIs, normalised by the number of RoIs as in Fast R-CNN."""
    cls_loss = F.cross_entropy(cls_logits.float(), labels)
    fg = torch.where(labels > 0)[0]
    deltas = box_deltas.float().view(len(labels), -1, 4)[fg, labels[fg]]
    box_loss = F.smooth_l1_loss(deltas, targets[fg], beta=1.0, reduction="sum") / max(1, len(labels))
    return cls_loss, box_loss


def fast_rcnn_loss_sum(cls_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                       targets: torch.Tensor) -> torch.Tensor:
    """:func:`fast_rcnn_loss`'s two terms summed over the RoIs, before their division by the
    number of RoIs (a data-parallel rank divides by the whole minibatch's count); 0 without
    RoIs."""
    cls_sum = F.cross_entropy(cls_logits.float(), labels, reduction="sum")
    fg = torch.where(labels > 0)[0]
    deltas = box_deltas.float().view(len(labels), -1, 4)[fg, labels[fg]]
    return cls_sum + F.smooth_l1_loss(deltas, targets[fg], beta=1.0, reduction="sum")


def detect(cls_logits: torch.Tensor, box_deltas: torch.Tensor, proposals: torch.Tensor,
           image_size: tuple[int, int], coder: BoxCoder, score_thresh: float = 0.01,
           nms_iou: float = 0.3, max_per_image: int = 100, min_size: float = 1.0,
           target_stats: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Per-class boxes, scores and labels (>= 1) of one image after class-wise NMS.

    ``target_stats`` (per-class mean and std, :func:`regression_stats`) unnormalises the
    predicted deltas before they are decoded.
    ``image_size`` is ``(height, width)`` of the frame ``proposals`` live in; boxes are clipped
    to it. Boxes narrower or lower than ``min_size`` (one pixel: less would be an inverted box
    in the VOC convention) are dropped. At most ``max_per_image`` detections (the highest
    scores) are kept.
    """
    n_cls = cls_logits.shape[1]
    scores = F.softmax(cls_logits.float(), dim=1)
    deltas = box_deltas.float()
    if target_stats is not None:
        mean, std = target_stats
        deltas = (deltas.view(-1, n_cls, 4) * std + mean).view(-1, 4 * n_cls)
    boxes = coder.decode(deltas, [proposals.float()]).view(-1, n_cls, 4)
    boxes = clip_boxes_to_image(boxes, image_size)
    labels = torch.arange(n_cls, device=scores.device).view(1, -1).expand_as(scores)
    boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
    keep = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_per_image]
    return boxes[keep], scores[keep], labels[keep]

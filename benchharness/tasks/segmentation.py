"""VOC 2012 semantic segmentation transfer (``voc12-seg``) with FCN-32s (Long et al. 2015).

Protocols: ``all`` (everything fine-tunes) and ``fc6-8`` (conv1..conv5 frozen).

Training on ``ImageSets/Segmentation/train`` (plus, when ``sbd_root`` is set, the SBD images of
Hariharan et al. 2011 that are not in the VOC 2012 val split, as FCN does): images at their own
size (or the short side resized to ``scale``), mirrored at random, several padded into one
minibatch; per-pixel softmax loss ignoring the void label 255 (and the padding); SGD with
momentum and step decay. Testing on ``val``: class scores upsampled to the original image
size, arg-max per pixel. Scored with ``miou`` (one confusion matrix over the whole split).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..accel import autocast, peak_memory_mb, prepare_model, reset_peak_memory
from ..data.classes import IGNORE_LABEL
from ..data.voc import VOCDevkit, load_image, locate_devkit
from ..evaluators.ground_truth import SEG_CLASSES, seg_ground_truth
from ..hookspecs import hookimpl
from ..interfaces import DataError, Predictions, RunContext, Task, TransferOutput
from ..representation import Representation
from ..rescale import INIT_IMAGES, rescaled
from ..training import LossGuard, sgd_step
from .settings import from_suite_section, step_schedule
from .batching import normalised_batch
from .fcn import FCN32s

PROTOCOLS = ("all", "fc6-8")


@dataclass
class SegConfig:
    """Settings of one segmentation transfer; every field can be set in the suite file."""

    year: str = "2012"
    train_split: str = "train"
    test_split: str = "val"
    sbd_root: str = ""  # SBD's benchmark_RELEASE/dataset (img/, cls/, train.txt, val.txt)
    scale: int = 0  # short side of the network's input; 0: images at their own size
    epochs: int = 30
    batch_size: int = 8
    lr: float = 0.001
    lr_pretrained: float = 0.0  # lr of pretrained stages that train; 0: same as lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: int = 1
    step_at: float = 0.8
    flip: bool = True
    test_batch: int = 8
    rescale: bool = False  # Krahenbuhl et al.'s magic_init (run --rescale) before training
    rescale_images: int = INIT_IMAGES  # training images it runs on
    amp: str = "auto"
    metric: str = "miou"
    extra_metrics: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, config, protocol: str) -> "SegConfig":
        """Top-level keys of the task's suite section, overridden by its ``[protocol]`` table."""
        return from_suite_section(cls, "voc12-seg", PROTOCOLS, config, protocol)


def resize_pair(image: torch.Tensor, mask: torch.Tensor | None, scale: int):
    """Resize so that the short side is ``scale`` (bilinear image, nearest mask); 0 keeps them."""
    if not scale:
        return image, mask
    h, w = image.shape[-2:]
    size = [max(1, round(h * scale / min(h, w))), max(1, round(w * scale / min(h, w)))]
    image = TF.resize(image, size, antialias=True)
    if mask is not None:
        mask = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST)[0]
    return image, mask


def read_sbd(root: Path | str, exclude: set[str]):
    """SBD's train + val images and class masks (``cls/<id>.mat``'s ``GTcls.Segmentation``),
    leaving out the ids in ``exclude``; yields ``(image_id, image, mask)``."""
    import scipy.io

    root = Path(root).expanduser()
    ids = []
    for split in ("train", "val"):
        path = root / f"{split}.txt"
        if not path.is_file():
            raise DataError(path, "SBD split file missing (expected benchmark_RELEASE/dataset)")
        ids += [i for i in path.read_text().split() if i not in exclude]
    for image_id in dict.fromkeys(ids):
        mat_path = root / "cls" / f"{image_id}.mat"
        try:
            gt = scipy.io.loadmat(str(mat_path))["GTcls"]
            mask = np.asarray(np.asarray(gt["Segmentation"]).ravel()[0], dtype=np.uint8)
        except (OSError, KeyError, ValueError, IndexError, TypeError, scipy.io.matlab.MatReadError) as exc:
            raise DataError(mat_path, f"cannot read the SBD mask ({exc})") from None
        yield image_id, load_image(root / "img" / f"{image_id}.jpg"), mask


def load_train(devkit: VOCDevkit, cfg: SegConfig, exclude: set[str], ctx: RunContext):
    """Training images (uint8 [3, h, w]) and masks (uint8 [h, w]) at the network's scale."""
    gt = seg_ground_truth(devkit, cfg.year, cfg.train_split)
    images, masks = [], []
    for image_id in ctx.bar(gt.image_ids, desc=f"load VOC{cfg.year} {cfg.train_split}", leave=False):
        image, mask = resize_pair(devkit.load_image(cfg.year, image_id),
                                  torch.from_numpy(gt.mask(image_id)), cfg.scale)
        images.append(image)
        masks.append(mask)
    n_sbd = 0
    if cfg.sbd_root:
        for _, image, mask in ctx.bar(read_sbd(cfg.sbd_root, exclude | set(gt.image_ids)),
                                      desc="load SBD", leave=False):
            image, mask = resize_pair(image, torch.from_numpy(mask), cfg.scale)
            images.append(image)
            masks.append(mask)
            n_sbd += 1
    return images, masks, n_sbd


def label_batch(masks, device) -> torch.Tensor:
    """int64 labels [B, H, W] of uint8 masks, padded at the bottom and right with the ignore
    value (to match :func:`.batching.normalised_batch` of their images)."""
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)
    y = torch.full((len(masks), h, w), IGNORE_LABEL, dtype=torch.int64, device=device)
    for k, m in enumerate(masks):
        y[k, :m.shape[-2], :m.shape[-1]] = m.to(device).long()
    return y


def train(model: FCN32s, images, masks, cfg: SegConfig, ctx: RunContext) -> float:
    """Fit FCN-32s with the per-pixel softmax loss; returns the last epoch's mean loss."""
    device = ctx.device
    opt = torch.optim.SGD(model.param_groups(cfg.lr, cfg.lr_pretrained), momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    steps = max(1, len(images) // cfg.batch_size)
    total = cfg.epochs * steps
    sched = step_schedule(opt, total, cfg.lr_steps, cfg.step_at)
    gen = torch.Generator().manual_seed(ctx.seed)
    net = prepare_model(model, device)
    model.train()
    epoch_loss, guard = float("nan"), LossGuard("voc12-seg training")
    for epoch in ctx.bar(range(cfg.epochs), desc="train", leave=False):
        order = torch.randperm(len(images), generator=gen)
        flips = torch.rand(len(images), generator=gen) < 0.5
        running = 0.0
        for step in range(steps):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size].tolist()
            flip = [cfg.flip and bool(flips[i]) for i in idx]
            x = normalised_batch([images[i].flip(-1) if f else images[i] for i, f in zip(idx, flip)],
                                 model.input, device)
            y = label_batch([masks[i].flip(-1) if f else masks[i] for i, f in zip(idx, flip)], device)
            with autocast(device, cfg.amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_LABEL)
            running += sgd_step(opt, sched, loss)
        epoch_loss = float(running) / steps
        guard.check(epoch_loss, epoch)
    return epoch_loss


@torch.no_grad()
def predict(model: FCN32s, devkit: VOCDevkit, image_ids, cfg: SegConfig, ctx: RunContext):
    """Per image id a uint8 [H, W] mask of class indices at the original image size."""
    net = prepare_model(model, ctx.device).eval()
    masks = {}
    for start in ctx.bar(range(0, len(image_ids), cfg.test_batch), desc="segment", leave=False):
        ids = image_ids[start:start + cfg.test_batch]
        originals = [devkit.load_image(cfg.year, i) for i in ids]
        resized = [resize_pair(im, None, cfg.scale)[0] for im in originals]
        x = normalised_batch(resized, model.input, ctx.device)
        with autocast(ctx.device, cfg.amp):
            logits = net(x)
        for k, image_id in enumerate(ids):
            h, w = resized[k].shape[-2:]
            scores = logits[k:k + 1, :, :h, :w].float()
            if (h, w) != tuple(originals[k].shape[-2:]):
                scores = F.interpolate(scores, size=tuple(originals[k].shape[-2:]), mode="bilinear",
                                       align_corners=False)
            masks[image_id] = scores[0].argmax(0).to(torch.uint8).cpu().numpy()
    return masks


def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train FCN-32s on the train split under ``protocol`` and segment the test split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"voc12-seg: unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    cfg = SegConfig.from_mapping(ctx.config, protocol)
    torch.manual_seed(ctx.seed)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    test_gt = seg_ground_truth(devkit, cfg.year, cfg.test_split)
    images, masks, n_sbd = load_train(devkit, cfg, set(test_gt.image_ids), ctx)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0
    rescale_stats = None
    if cfg.rescale:
        representation, rescale_stats = rescaled(representation, images, cfg.rescale_images, ctx.device)
    model = FCN32s(representation, len(SEG_CLASSES), frozen_conv=protocol == "fc6-8")
    final_loss = train(model, images, masks, cfg, ctx)
    t_train = time.perf_counter() - t0 - t_data
    predicted = predict(model, devkit, list(test_gt.image_ids), cfg, ctx)
    t_total = time.perf_counter() - t0
    return TransferOutput(
        predictions=Predictions("seg", SEG_CLASSES, test_gt.image_ids, masks=predicted),
        ground_truth=test_gt, metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "train": t_train, "predict": t_total - t_data - t_train,
                "transfer": t_total},
        info={"split": cfg.test_split, "year": cfg.year, "final_loss": final_loss,
              "train_images": len(images), "sbd_images": n_sbd,
              "test_images": len(test_gt.image_ids), "frozen": list(model.frozen),
              "epochs": cfg.epochs, "scale": cfg.scale, "amp": cfg.amp, "rescale": rescale_stats,
              "peak_memory_mb": peak_memory_mb(ctx.device)},
    )


@hookimpl
def benchharness_tasks():
    """VOC 2012 semantic segmentation with FCN-32s under the all and fc6-8 protocols."""
    return [Task("voc12-seg", PROTOCOLS, ("voc2012",), transfer,
                 "PASCAL VOC 2012 semantic segmentation, FCN-32s")]

"""The training pipeline applied to a whole batch at once in torch (CPU or GPU), and batched mixup.

Per sample, albumentations costs ~0.25 ms of Python overhead; a batch here costs about that in all.
Every step reproduces core.transforms.train_transform: the same operations, parameter ranges,
probabilities and uint8 rounding (tests/test_augment.py checks each against albumentations itself).
SmallestMaxSize is applied once when images are decoded, so it is not repeated here.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.transforms import GAUSS_NOISE_STD_RANGE

# (holes, height, width) of the two OneOf branches: 1.x Cutout and 1.x CoarseDropout(max_holes=4)
DROPOUT_BRANCHES = ((8, 10, 16), (4, 8, 8))


class BatchAugment:
    def __init__(self, p_brightness_contrast: float = 0.5, brightness: float = 0.2, contrast: float = 0.2,
                 p_noise: float = 0.3, noise_std: tuple[float, float] = GAUSS_NOISE_STD_RANGE,
                 p_dropout: float = 0.5, dropout_branches=DROPOUT_BRANCHES,
                 p_affine: float = 0.7, scale: tuple[float, float] = (0.85, 1.15), translate: float = 0.05):
        self.p_bc, self.brightness, self.contrast = p_brightness_contrast, brightness, contrast
        self.p_noise, self.noise_std = p_noise, noise_std
        self.p_dropout, self.branches = p_dropout, dropout_branches
        self.p_affine, self.scale, self.translate = p_affine, scale, translate

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """x: (B, 1, H, W) uint8 on any device; g: a generator on the same device. Returns uint8."""
        y = x.float()
        y = self.brightness_contrast(y, *self._bc_params(len(y), g))
        y = self.noise(y, g)
        holes, affine = self._holes(y.shape, g), self._affine_params(y.shape, g)
        if y.device.type == "cpu":  # per image in OpenCV: cheaper than whole-batch tensor ops on a CPU
            return self._dropout_affine_cv2(y.to(torch.uint8), holes, *affine)  # whole numbers: exact
        return self._affine_grid(self.dropout(y, holes).to(torch.uint8), *affine)

    # -- parameters, drawn for the whole batch ------------------------------------------------
    def _uniform(self, n, lo, hi, g, device):
        return torch.rand(n, generator=g, device=device) * (hi - lo) + lo

    def _bc_params(self, n, g):
        dev = g.device
        on = torch.rand(n, generator=g, device=dev) < self.p_bc
        alpha = 1.0 + self._uniform(n, -self.contrast, self.contrast, g, dev)
        beta = self._uniform(n, -self.brightness, self.brightness, g, dev) * 255.0
        return torch.where(on, alpha, 1.0), torch.where(on, beta, 0.0)

    def _holes(self, shape, g) -> torch.Tensor:
        """(B, K, 4) rectangles x0, y0, x1, y1 (empty where a sample gets no dropout)."""
        b, _, h, w = shape
        dev = g.device
        on = torch.rand(b, generator=g, device=dev) < self.p_dropout
        branch = torch.randint(len(self.branches), (b,), generator=g, device=dev)  # OneOf: equal odds
        k = max(n for n, _, _ in self.branches)
        holes = torch.zeros(b, k, 4, dtype=torch.long, device=dev)
        for i, (n, hh, ww) in enumerate(self.branches):
            # as albumentations: top-left uniform so that the hole lies inside the image
            y0 = torch.randint(0, h - hh + 1, (b, n), generator=g, device=dev)
            x0 = torch.randint(0, w - ww + 1, (b, n), generator=g, device=dev)
            rect = torch.stack([x0, y0, x0 + ww, y0 + hh], -1)
            use = (on & (branch == i))[:, None, None]
            holes[:, :n] = torch.where(use, rect, holes[:, :n])
        return holes

    def _affine_params(self, shape, g):
        b, _, h, w = shape
        dev = g.device
        on = torch.rand(b, generator=g, device=dev) < self.p_affine
        s = self._uniform(b, *self.scale, g, dev)
        # albumentations draws a fraction of the size and truncates it to whole pixels
        tx = torch.trunc(self._uniform(b, -self.translate, self.translate, g, dev) * w)
        ty = torch.trunc(self._uniform(b, -self.translate, self.translate, g, dev) * h)
        return on, torch.where(on, s, 1.0), torch.where(on, tx, 0.0), torch.where(on, ty, 0.0)

    # -- operations, each matching albumentations on uint8 -----------------------------------
    @staticmethod
    def brightness_contrast(y: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        # albucore's uint8 LUT: clip(i * alpha + beta * 255, 0, 255).astype(uint8) (truncation)
        return y.mul(alpha[:, None, None, None]).add_(beta[:, None, None, None]).clamp_(0, 255).floor_()

    def noise(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = len(y)
        on = torch.rand(b, generator=g, device=g.device) < self.p_noise
        sigma = self._uniform(b, *self.noise_std, g, g.device) * 255.0
        idx = on.nonzero().squeeze(1)
        if len(idx) == 0:
            return y
        noise = torch.randn((len(idx), *y.shape[1:]), generator=g, device=g.device)
        noisy = noise.mul_(sigma[idx, None, None, None]).add_(y[idx])
        y[idx] = noisy.clamp_(0, 255).floor_()  # cv2.add in float32, then clip and astype(uint8)
        return y

    @staticmethod
    def dropout(y: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        _, _, h, w = y.shape
        rows = torch.arange(h, device=y.device)[None, None, :]
        cols = torch.arange(w, device=y.device)[None, None, :]
        x0, y0, x1, y1 = (holes[..., i][..., None] for i in range(4))
        in_rows = ((rows >= y0) & (rows < y1)).float()  # (B, K, H)
        in_cols = ((cols >= x0) & (cols < x1)).float()  # (B, K, W)
        # pixel (r, c) is in hole k iff row r and column c both are: a batched outer product
        inside = torch.bmm(in_rows.transpose(1, 2), in_cols) > 0  # (B, H, W)
        return y.masked_fill_(inside[:, None], 0.0)

    @staticmethod
    def affine(x: torch.Tensor, on: torch.Tensor, s: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        """uint8 in, uint8 out. Scale about the pixel-centre (W/2 - 0.5, H/2 - 0.5) and shift by whole
        pixels, bilinear, black border. On the CPU: cv2.warpAffine with albumentations' matrix (its own
        kernel, ~20 us an image); on a GPU: the same map through grid_sample."""
        if not bool(on.any()):
            return x
        if x.device.type == "cpu":
            return BatchAugment._affine_cv2(x, on, s, tx, ty)
        return BatchAugment._affine_grid(x, on, s, tx, ty)

    @staticmethod
    def _affine_grid(x: torch.Tensor, on: torch.Tensor, s: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        idx = on.nonzero().squeeze(1)
        y = x[idx].float()
        _, _, h, w = y.shape
        sel = s[idx]
        theta = torch.zeros(len(idx), 2, 3, device=y.device)
        theta[:, 0, 0] = 1.0 / sel
        theta[:, 1, 1] = 1.0 / sel
        theta[:, 0, 2] = -(tx[idx] * 2.0 / w) / sel
        theta[:, 1, 2] = -(ty[idx] * 2.0 / h) / sel
        grid = F.affine_grid(theta, [len(idx), 1, h, w], align_corners=False)
        warped = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = x.clone()
        out[idx] = warped.round_().clamp_(0, 255).to(torch.uint8)
        return out

    @staticmethod
    def _affine_cv2(x: torch.Tensor, on: torch.Tensor, s: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        return BatchAugment._dropout_affine_cv2(x, None, on, s, tx, ty)

    @staticmethod
    def _dropout_affine_cv2(x: torch.Tensor, holes: torch.Tensor | None, on: torch.Tensor, s: torch.Tensor,
                            tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        """CPU: black holes by slicing, then cv2.warpAffine, image by image on uint8."""
        _, _, h, w = x.shape
        cx, cy = w / 2 - 0.5, h / 2 - 0.5
        imgs = x.numpy().copy()
        if holes is not None:
            for i, rects in enumerate(holes.tolist()):
                for x0, y0, x1, y1 in rects:
                    if x1 > x0:
                        imgs[i, 0, y0:y1, x0:x1] = 0
        for i in on.nonzero().squeeze(1).tolist():
            k, dx, dy = float(s[i]), float(tx[i]), float(ty[i])
            m = np.array([[k, 0.0, (1 - k) * cx + dx], [0.0, k, (1 - k) * cy + dy]])
            imgs[i, 0] = cv2.warpAffine(imgs[i, 0], m, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return torch.from_numpy(imgs)


def mixup_batch(images: np.ndarray, index: np.ndarray, labels: np.ndarray, rows: np.ndarray, num_classes: int,
                p: float, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's mixup for the training rows `rows`, vectorised: with probability p a row is
    blended with a uniformly drawn row of another class, weight ~ Beta(alpha, alpha), image cast
    to uint8 (truncation) as the notebook does (in float32), targets soft. Returns (B, 1, H, W) uint8 and (B, C) float32."""
    own = labels[rows]
    imgs = images[index[rows]]
    target = np.zeros((len(rows), num_classes), np.float32)
    mix = (rng.random(len(rows)) < p) if p > 0 and len(np.unique(labels)) > 1 else np.zeros(len(rows), bool)
    partner = rng.integers(len(labels), size=len(rows))
    redo = mix & (labels[partner] == own)
    while redo.any():  # the notebook's rejection loop, for all rows at once
        partner[redo] = rng.integers(len(labels), size=int(redo.sum()))
        redo = mix & (labels[partner] == own)
    w = rng.beta(alpha, alpha, size=len(rows))
    w = np.where(mix, w, 1.0)
    if mix.any():
        m = np.flatnonzero(mix)
        # float32, not the notebook's float64: 10x cheaper; a pixel can come out one grey level lower
        # where the blend lands a hair under an integer (often when w is near 0 or 1, as Beta(0.2, 0.2)
        # likes). The per-sample path (augment=albumentations) keeps the float64 blend.
        a = imgs[m].astype(np.float32)
        b = images[index[partner[m]]].astype(np.float32)
        wm = w[m, None, None].astype(np.float32)
        a *= wm
        b *= 1 - wm
        a += b
        imgs[m] = a.astype(np.uint8)
    ar = np.arange(len(rows))
    target[ar, own] += w
    np.add.at(target, (ar[mix], labels[partner[mix]]), (1 - w[mix]).astype(np.float32))
    return imgs[:, None], target

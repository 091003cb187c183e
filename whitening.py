"""The whitening stem's kernel, from the training images (config.whiten).

airbench (arXiv 2404.00498) starts its net with a 2x2 conv whose filters
are the eigenvectors of the covariance of the training set's 2x2 patches,
each scaled by 1 / sqrt(eigenvalue + eps), and their negatives: its outputs
are decorrelated with unit variance (the negatives let a following GELU
keep both signs). The kernel is set once, before the first step, and
frozen (optim.freeze_stem).
"""

import numpy as np

from models.air_inception import STEM

EPSILON = 5e-4
NUM_IMAGES = 5000  # airbench estimates the covariance from this many.


def patches(images: np.ndarray, size: int) -> np.ndarray:
  """(N,H,W,C) -> every size x size patch, flattened in (h, w, c) order:
  (N * (H-size+1) * (W-size+1), size * size * C)."""
  n, h, w, c = images.shape
  rows = [images[:, i:i + h - size + 1, j:j + w - size + 1]
          for i in range(size) for j in range(size)]
  return np.stack(rows, axis=3).reshape(-1, size * size * c)


def whitening_kernel(images: np.ndarray, size: int = 2,
                     epsilon: float = EPSILON) -> np.ndarray:
  """The stem's (size, size, C, 2 * size * size * C) HWIO kernel for
  `images` (N,H,W,C), normalized as the train step normalizes them."""
  x = patches(np.asarray(images, np.float32), size)
  covariance = (x.T @ x).astype(np.float64) / len(x)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  order = np.argsort(eigenvalues)[::-1]  # Largest first, as airbench.
  filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + epsilon)
  kernel = np.concatenate([filters, -filters], axis=1)  # (k*k*C, 2*k*k*C)
  c = images.shape[-1]
  return kernel.reshape(size, size, c, -1).astype(np.float32)


def set_stem(params: dict, kernel: np.ndarray) -> dict:
  """`params` with the whitening stem's kernel replaced by `kernel`."""
  stem = params[STEM]['conv']
  if stem['kernel'].shape != kernel.shape:
    raise ValueError(f'The whitening stem has a kernel of shape '
                     f'{stem["kernel"].shape}; the data gives {kernel.shape}.')
  return {**params, STEM: {**params[STEM], 'conv': {**stem, 'kernel': kernel}}}

"""CIFAR-10 input pipeline: whole splits as uint8 arrays, augmentation in jit.

A CIFAR-sized split fits in host memory as uint8, so it is loaded once.
Batches are numpy gathers at indices from `batch_indices`, which depend only
on (seed, step), so a resumed run sees exactly the same batches. Augmentation
and normalisation run on the accelerator in `augment_batch`.

`load_split(config.data, split)` takes the `config.data` block that
configs/base.py defines and documents (`default_config()` returns a copy).
The source is TFDS (`source='tfds'`: the prepared dataset stays in TFDS's
data dir), built-in synthetic data (`source='synthetic'`: CIFAR-shaped,
learnable, made in memory from `synthetic_seed`, see `_load_synthetic`) or a
local image folder/archive of `<split>/<class>/<image>` (decoded once, then
cached as .npz). `split` is a name with an optional percent slice, e.g.
'train', 'train[:90%]', 'train[90%:]', 'train[10%:20%]', and means the same
for every source: the whole named split is loaded and the [start%, end%)
range of every class is kept (`local_data.stratified_range`), in the order
the source stores it. So 'train[:90%]' and 'train[90%:]' are disjoint,
stratified, cover the split and are the same on every run. Local sources are
local_data.py's; decoding one with `num_workers` > 1 uses processes, so the
main script needs the usual `if __name__ == '__main__':` guard.

Problems with the data raise `DataError` (a ValueError) whose message says
what to fix: `MissingSplitError` for an absent split, `DataUnavailableError`
(also a RuntimeError) when TFDS cannot download or prepare the dataset (on a
host that cannot resolve the download server, within seconds: TFDS itself
would retry for minutes). `check_data(config.data)` runs these checks once,
without loading a split (a sweep does, before launching its runs).
"""

import dataclasses
import functools
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax import lax
import ml_collections
import numpy as np

import local_data
from local_data import DataError, MissingSplitError  # noqa: F401 (callers')

_SPLIT_RE = re.compile(r'^([\w-]+)(?:\[(?:(-?\d+)%)?:(?:(-?\d+)%)?\])?$')
# Seconds to wait for a download server's name to resolve before calling the
# host offline (the resolver has no timeout of its own).
RESOLVE_TIMEOUT_S = 5.0

Array = np.ndarray | jax.Array


def default_config() -> ml_collections.ConfigDict:
  """A fresh copy of the `config.data` block of configs/base.py."""
  # The one definition (every key documented) is the config's; importing it
  # here, not at the top, keeps this module importable without configs/.
  from configs import base  # pylint: disable=g-import-not-at-top
  return base.get_config().data


class DataUnavailableError(DataError, RuntimeError):
  """TFDS could not download or prepare the dataset."""


@dataclasses.dataclass(frozen=True)
class Split:
  """One split, in host memory."""
  images: np.ndarray  # (N, H, W, 3) uint8
  labels: np.ndarray  # (N,) int32, index into class_names
  class_names: list[str]
  name: str

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _with_defaults(data_cfg) -> ml_collections.ConfigDict:
  cfg = default_config()
  cfg.update(ml_collections.ConfigDict(data_cfg).to_dict())
  return cfg


def check_data(data_cfg: ml_collections.ConfigDict) -> None:
  """Raises a DataError saying what to fix where `data_cfg`'s source cannot
  be read, loading no split: TFDS prepares the dataset if it is not yet
  (downloading it, as load_split would; an offline host fails within
  seconds); a local source must exist and be readable; the synthetic
  source's settings are checked (nothing is made)."""
  cfg = _with_defaults(data_cfg)
  if cfg.source == 'tfds':
    _tfds_builder(cfg)
  elif cfg.source == 'synthetic':
    _synthetic_settings(cfg)
  else:
    local_data.local_path(cfg.source)


def load_split(data_cfg: ml_collections.ConfigDict, split: str) -> Split:
  """Loads `split` (e.g. 'train[:90%]') of the source that `data_cfg` names.

  Every source loads the whole named split, then keeps the split's percent
  range of every class, so a split string selects the same examples from the
  same data whichever source holds it.
  """
  cfg = _with_defaults(data_cfg)
  name, start, end = _parse_split(split)
  builtin = {'tfds': _load_tfds, 'synthetic': _load_synthetic}
  load = builtin.get(cfg.source, _load_local)
  images, labels, class_names = load(cfg, name)
  if (start, end) != (0, 100):
    keep = local_data.stratified_range(labels, start, end)
    images, labels = images[keep], labels[keep]
  if not len(labels):
    raise DataError(f'Split {split!r} of {cfg.source!r} has no examples.')
  return Split(images, labels.astype(np.int32), list(class_names), split)


def _parse_split(split: str) -> tuple[str, int, int]:
  """'train[10%:20%]' -> ('train', 10, 20); 'test' -> ('test', 0, 100)."""
  match = _SPLIT_RE.match(split.replace(' ', ''))
  if not match:
    raise DataError(
        f'Cannot parse split {split!r}: a split is a name, optionally with a '
        "percent slice taken from every class, e.g. 'train', 'train[:90%]', "
        "'train[90%:]'.")
  bounds = []
  for percent, default in zip(match.groups()[1:], (0, 100)):
    value = default if percent is None else int(percent)
    if not -100 <= value <= 100:
      raise DataError(f'Split {split!r}: percents must be in [-100, 100].')
    bounds.append(value % 100 if value < 0 else value)  # -10% is 90%.
  return match.group(1), bounds[0], bounds[1]


# --- TFDS -------------------------------------------------------------------


def _load_tfds(cfg: ml_collections.ConfigDict, name: str):
  """(images, labels, class_names) of the whole TFDS split `name`, e.g. 'train'.

  In TFDS's stored order; TFDS slicing is not used, since it cuts the split
  in that order rather than per class.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _tfds_builder(cfg)
  present = list(builder.info.splits)  # Empty if unknown, e.g. mock data.
  if present:
    local_data.check_split_present(name, present,
                                   f'TFDS dataset {cfg.dataset!r}')
  ds = builder.as_dataset(split=name, as_supervised=True).batch(4096)
  batches = list(tfds.as_numpy(ds))  # [((B, H, W, 3) uint8, (B,) int64)]
  if not batches:
    raise DataError(f'Split {name!r} of TFDS {cfg.dataset!r} is empty.')
  images = np.concatenate([x for x, _ in batches])
  labels = np.concatenate([y for _, y in batches])
  label_key = builder.info.supervised_keys[1]
  return images, labels, builder.info.features[label_key].names


def _tfds_builder(cfg: ml_collections.ConfigDict):
  """The TFDS builder of cfg.dataset, the dataset prepared (downloaded first
  if need be; where the download server does not resolve, failing at once)."""
  # Imported here, where a TFDS source is used, and nowhere else: it takes
  # seconds. Its start-up INFO lines stay off the console unless the user
  # asks for them; its oneDNN graph rewrites (announced by one of those
  # lines) do nothing for decoding a dataset.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')  # Leave the GPUs to JAX.
  except RuntimeError:  # TensorFlow was already initialised elsewhere.
    pass
  try:
    builder = tfds.builder(cfg.dataset, data_dir=cfg.data_dir)
  except tfds.core.DatasetNotFoundError:
    raise DataError(
        f'TFDS has no dataset {cfg.dataset!r}: set --config.data.dataset to a '
        "TFDS name, e.g. 'cifar10' (or --config.data.source to 'synthetic' "
        'or a local folder).') from None
  if builder.is_prepared():
    return builder
  try:
    _check_download_servers(builder)
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise DataUnavailableError(_tfds_help(cfg, builder.data_dir_root, e)) from e
  return builder


def _check_download_servers(builder) -> None:
  """Raises ConnectionError if a file the builder would download has a
  server (or proxy) whose name does not resolve: offline, TFDS would retry
  for minutes before failing. Files already downloaded, or in the manual
  dir, need no server."""
  try:  # TFDS's names of downloaded files (not part of its public API).
    from tensorflow_datasets.core.download.resource import get_dl_fname  # pylint: disable=g-import-not-at-top
  except ImportError:
    return  # Cannot tell what is downloaded: let TFDS try.
  downloads = os.path.join(builder.data_dir_root, 'downloads')
  hosts = set()
  for url, info in (builder.url_infos or {}).items():
    local = [os.path.join(downloads, 'manual', info.filename or ''),
             os.path.join(downloads, get_dl_fname(url, info.checksum)),
             os.path.join(downloads, get_dl_fname(url))]
    if not any(map(os.path.isfile, local)):
      hosts.add(_server(url))
  for host in sorted(hosts - {None}):
    if not _resolves(host):
      raise ConnectionError(
          f'cannot resolve the download server {host} within '
          f'{RESOLVE_TIMEOUT_S:g} s: this host looks offline')


def _server(url: str) -> str | None:
  """The host a download of `url` connects to: its proxy's, if any."""
  parts = urllib.parse.urlparse(url)
  proxy = urllib.request.getproxies().get(parts.scheme)
  if proxy and not urllib.request.proxy_bypass(parts.hostname or ''):
    return urllib.parse.urlparse(proxy).hostname
  return parts.hostname


def _resolves(host: str) -> bool:
  """Whether `host` resolves within RESOLVE_TIMEOUT_S (in a daemon thread:
  getaddrinfo has no timeout, and a hung one must not hold up the exit)."""
  resolved = []

  def resolve():
    try:
      socket.getaddrinfo(host, 443)
      resolved.append(True)
    except OSError:  # socket.gaierror included.
      pass

  thread = threading.Thread(target=resolve, daemon=True)
  thread.start()
  thread.join(RESOLVE_TIMEOUT_S)
  return bool(resolved)


def _tfds_help(cfg: ml_collections.ConfigDict, data_dir_root,
               error: Exception) -> str:
  manual_dir = os.path.join(data_dir_root, 'downloads', 'manual')
  return (
      f'TFDS could not download/prepare {cfg.dataset!r} in {data_dir_root} '
      f'({type(error).__name__}: {error}). Either:\n'
      '  (a) get the source archive on a machine with internet (for cifar10: '
      'cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)'
      f', copy it into {manual_dir}/ (or set --config.data.data_dir to a TFDS '
      'data dir that holds it or the prepared dataset) and re-run; or\n'
      '  (b) use a local copy instead: '
      '--config.data.source=PATH/TO/cifar10 '
      '(an image folder or .tar.gz/.zip of <split>/<class>/*.jpg; with only '
      "a 'train' split, the default splits hold out train[90%:] for "
      'validation).')


# --- Synthetic ---------------------------------------------------------------

SYNTHETIC_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                     'frog', 'horse', 'ship', 'truck')  # CIFAR-10's names.
SYNTHETIC_SPLITS = ('train', 'test')  # In the order of data.synthetic_size.
# Class patterns hold spatial frequencies up to this many cycles per image, in
# each direction: smooth shapes that survive the random shift and crop.
_SYNTHETIC_MAX_FREQUENCY = 2
_SYNTHETIC_CONTRAST = (20.0, 60.0)  # Pattern std in uint8 levels, per image.
_SYNTHETIC_BRIGHTNESS = 20.0  # Std of each image's per-channel offset.
_SYNTHETIC_NOISE = 40.0  # Half-width of the uniform per-pixel noise.


def _load_synthetic(cfg: ml_collections.ConfigDict, name: str):
  """(images, labels, class_names) of the synthetic split `name`.

  Each of the 10 classes has a fixed random smooth pattern (low frequencies,
  periodic, zero mean); an image is its class's pattern under a random
  circular shift of up to a quarter of the side, a random left-right flip,
  a random contrast and per-channel brightness, plus uniform noise. So a
  small convnet learns it within a few hundred steps, a linear classifier
  only partly. The patterns come from `cfg.synthetic_seed` alone, each
  split's draws from (seed, split): the same config gives byte-identical
  arrays, whatever `config.seed`. Labels cycle through the classes, so every
  class has the same count (to within one).
  """
  local_data.check_split_present(name, SYNTHETIC_SPLITS,
                                 "The 'synthetic' source")
  sizes, size, seed = _synthetic_settings(cfg)
  patterns = _class_patterns(np.random.default_rng([seed, 0]), size)
  rng = np.random.default_rng([seed, 1 + SYNTHETIC_SPLITS.index(name)])
  labels = np.arange(sizes[name]) % len(SYNTHETIC_CLASSES)
  return _render(rng, patterns, labels), labels, list(SYNTHETIC_CLASSES)


def _synthetic_settings(cfg: ml_collections.ConfigDict):
  """({split: examples}, image side, seed) of `cfg`, checked."""
  sizes, size, seed = (cfg.synthetic_size, cfg.synthetic_image_size,
                       cfg.synthetic_seed)
  num_classes = len(SYNTHETIC_CLASSES)
  min_size = 2 * _SYNTHETIC_MAX_FREQUENCY + 1  # Holds the top frequency.
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  if (not isinstance(sizes, (tuple, list)) or len(sizes) != 2 or  # JSON: list.
      not all(is_int(n) and n >= num_classes for n in sizes)):
    raise DataError(
        f'data.synthetic_size={sizes!r}: must be (train, test) example counts'
        f', each at least {num_classes} (one per class), e.g. '
        "--config.data.synthetic_size='(5000,1000)'.")
  if not is_int(size) or size < min_size:
    raise DataError(
        f'data.synthetic_image_size={size!r}: must be an int >= {min_size}, '
        'e.g. config.image_size.')
  if not is_int(seed) or seed < 0:
    raise DataError(f'data.synthetic_seed={seed!r}: must be an int >= 0.')
  return dict(zip(SYNTHETIC_SPLITS, sizes)), size, seed


def _class_patterns(rng: np.random.Generator, size: int) -> np.ndarray:
  """(classes, 3, size, size) float32: smooth periodic patterns, std 1.

  Random complex Fourier coefficients at every frequency up to
  _SYNTHETIC_MAX_FREQUENCY, none at (0, 0), through an inverse real FFT.
  """
  shape = (len(SYNTHETIC_CLASSES), 3, size, size // 2 + 1)
  spectrum = np.zeros(shape, np.complex128)
  top = _SYNTHETIC_MAX_FREQUENCY
  low = np.r_[0:top + 1, -top:0]  # Row frequencies 0..top, -top..-1.
  coefficients = rng.normal(size=(2, *shape[:2], len(low), top + 1))
  spectrum[:, :, low, :top + 1] = coefficients[0] + 1j * coefficients[1]
  spectrum[:, :, 0, 0] = 0  # Zero mean: classes differ in shape, not colour.
  patterns = np.fft.irfft2(spectrum, s=(size, size))
  return (patterns / patterns.std(axis=(1, 2, 3), keepdims=True)).astype(
      np.float32)


def _render(rng: np.random.Generator, patterns: np.ndarray,
            labels: np.ndarray) -> np.ndarray:
  """(N, size, size, 3) uint8: one randomly varied pattern per label."""
  n, size = len(labels), patterns.shape[-1]
  # Every pattern and its mirror image, tiled 2x2 so that each size x size
  # window is a circular shift: (2 * classes, 3, size + 1, size + 1, size,
  # size), a view.
  mirrored = np.stack([patterns, patterns[..., ::-1]], 1).reshape(
      -1, 3, size, size)
  windows = np.lib.stride_tricks.sliding_window_view(
      np.tile(mirrored, (1, 1, 2, 2)), (size, size), axis=(2, 3))
  reach = max(1, size // 4)
  dy, dx = rng.integers(-reach, reach + 1, (2, n)) % size
  x = windows[2 * labels + rng.integers(0, 2, n), :, dy, dx]  # (N, 3, H, W)
  x *= rng.uniform(*_SYNTHETIC_CONTRAST, (n, 1, 1, 1)).astype(np.float32)
  x += rng.normal(128, _SYNTHETIC_BRIGHTNESS, (n, 3, 1, 1)).astype(np.float32)
  # Uniform noise in [-noise, noise], from full-range random bytes: several
  # times faster than other draws at CIFAR's size. The +0.5 makes the uint8
  # cast below round.
  x += rng.integers(0, 256, x.shape, np.uint8) * np.float32(
      2 * _SYNTHETIC_NOISE / 255)
  x -= np.float32(_SYNTHETIC_NOISE - 0.5)
  np.clip(x, 0, 255, out=x)
  return x.transpose(0, 2, 3, 1).astype(np.uint8, order='C')


# --- Local image folders and archives -------------------------------------


def _load_local(cfg: ml_collections.ConfigDict, name: str):
  """local_data.load with the config's cache dir and decoding workers."""
  return local_data.load(cfg.source, name, cfg.cache_dir, cfg.num_workers)


def dataset_stats(split: Split) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of `split.images` in [0, 1] units, (3,) each."""
  return local_data.channel_stats(split.images)


# --- Statistics and preprocessing (jit) ------------------------------------


def _normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 -> float32 in [0, 1], then (x - mean) / std where given."""
  x = images.astype(jnp.float32) / 255.0
  if mean is not None:
    x = x - jnp.asarray(mean, jnp.float32)
  if std is not None:
    x = x / jnp.asarray(std, jnp.float32)
  return x


def _center_crop(images: jax.Array, size: int) -> jax.Array:
  """(B, H, W, C) -> (B, size, size, C)."""
  height, width = images.shape[1:3]
  if size > height or size > width:
    raise ValueError(f'Cannot crop {height}x{width} images to {size}x{size}.')
  top, left = (height - size) // 2, (width - size) // 2
  return images[:, top:top + size, left:left + size]


@functools.partial(
    jax.jit,
    static_argnames=('image_size', 'crop_padding', 'flip', 'random_crop'))
def augment_batch(rng: jax.Array, images: Array, *, image_size: int, mean,
                  std, crop_padding: int = 4, flip: bool = True,
                  random_crop: bool = True) -> jax.Array:
  """Training augmentation: pad, random crop, random flip, normalise.

  Args:
    rng: PRNG key.
    images: (B, H, W, 3) uint8.
    image_size: side of the output.
    mean, std: (3,) in [0, 1] units (see `dataset_stats`), or None to skip.
    crop_padding: reflect padding on each side before cropping.
    flip: flip a random half of the examples left-right.
    random_crop: crop at a random offset per example, else at the centre.

  Returns:
    (B, image_size, image_size, 3) float32.
  """
  crop_rng, flip_rng = jax.random.split(rng)
  p = crop_padding
  x = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  if random_crop:
    batch, height, width, channels = x.shape
    offsets = jax.random.randint(  # (B, 2): top, left
        crop_rng, (batch, 2), 0,
        jnp.array([height - image_size + 1, width - image_size + 1]))
    crop = lambda image, o: lax.dynamic_slice(
        image, (o[0], o[1], 0), (image_size, image_size, channels))
    x = jax.vmap(crop)(x, offsets)
  else:
    x = _center_crop(x, image_size)
  if flip:
    flips = jax.random.bernoulli(flip_rng, 0.5, (x.shape[0], 1, 1, 1))
    x = jnp.where(flips, x[:, :, ::-1], x)
  return _normalize(x, mean, std)


@functools.partial(jax.jit, static_argnames=('image_size',))
def preprocess_eval(images: Array, *, image_size: int, mean,
                    std) -> jax.Array:
  """(B, H, W, 3) uint8 -> centre crop -> (B, size, size, 3) float32."""
  return _normalize(_center_crop(images, image_size), mean, std)


# --- Deterministic batching ------------------------------------------------


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full global batches per epoch (the remainder is dropped)."""
  if not 0 < batch_size <= num_examples:
    raise ValueError(f'Batch size {batch_size} must be in [1, {num_examples}]'
                     ' (the number of examples).')
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False  # Shared by every call of the epoch.
  return perm


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int, *,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """Example indices of this process's part of the global batch at `step`.

  Each epoch is a permutation from `np.random.default_rng([seed, epoch])`, cut
  into `steps_per_epoch` global batches of `batch_size`; process i gets the
  i-th contiguous 1/process_count of each. Depends only on the arguments.

  Returns:
    (batch_size // process_count,) int indices.
  """
  if batch_size % process_count:
    raise ValueError(f'Global batch size {batch_size} must divide by the '
                     f'process count {process_count}.')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in '
                     f'[0, {process_count}).')
  epoch, step_in_epoch = divmod(step, steps_per_epoch(num_examples, batch_size))
  per_process = batch_size // process_count
  start = step_in_epoch * batch_size + process_index * per_process
  permutation = _epoch_permutation(num_examples, seed, epoch)
  return permutation[start:start + per_process]


def alternating_flips(indices: np.ndarray, step: int, num_examples: int,
                      batch_size: int, seed: int) -> np.ndarray:
  """Which of the examples `indices`, drawn at `step`, to mirror under
  airbench's alternating flip: a random half of the set (fixed by `seed`)
  in even epochs and the other half in odd ones, so that every example is
  seen both ways every two epochs (random flips repeat or miss some).

  Returns:
    (len(indices),) bool.
  """
  epoch = step // steps_per_epoch(num_examples, batch_size)
  return _first_flips(num_examples, seed)[indices] ^ bool(epoch % 2)


@functools.lru_cache(maxsize=4)
def _first_flips(num_examples: int, seed: int) -> np.ndarray:
  flips = np.random.default_rng([seed, 0x1F119]).random(num_examples) < 0.5
  flips.flags.writeable = False
  return flips


def mirror(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
  """(B,H,W,C) images with those where `flips` mirrored left-right."""
  return np.where(flips[:, None, None, None], images[:, :, ::-1], images)


def eval_batches(num_examples: int,
                 batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (indices, valid) of shape (batch_size,) covering every example once.

  The last batch is padded with copies of the last example, marked invalid.
  """
  for start in range(0, num_examples, batch_size):
    indices = np.arange(start, start + batch_size)
    yield np.minimum(indices, num_examples - 1), indices < num_examples

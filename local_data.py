"""Local CIFAR-style data without JAX: an image folder or .tar.gz/.zip of
`[<wrapper>/]<split>/<class>/<image>`, decoded once and cached as .npz, the
stratified percent ranges that name a split's part, and channel statistics.

input_pipeline.py loads local sources through `load`; the PyTorch anchor
(benchmarks/airbench_reference.py) imports this module too, so both read the
same cache, split and normalisation. Only numpy, Pillow and absl here.
"""

import collections
import concurrent.futures
import hashlib
import io
import multiprocessing
import os
import pathlib
import posixpath
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence

from absl import logging
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
DEFAULT_CACHE_DIR = '~/.cache/pointwise'
_CACHE_VERSION = 1  # Bump when the cached arrays change meaning.
_DECODE_CHUNK = 1000  # Images per task sent to a decoding process.


class DataError(ValueError):
  """A data source or split problem; the message says how to fix it."""


class MissingSplitError(DataError):
  """The source has no split of the requested name."""


def stratified_range(labels: np.ndarray, start: int, end: int) -> np.ndarray:
  """Indices of the [start%, end%) range of every class, in stored order.

  Of a class of n examples, those at positions n * start // 100 up to
  n * end // 100 within the class, so adjacent ranges neither overlap nor
  leave gaps.
  """
  ranges = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)  # This class, in stored order.
    ranges.append(idx[len(idx) * start // 100:len(idx) * end // 100])
  return np.sort(np.concatenate(ranges))


def check_split_present(name: str, present: Sequence[str],
                        source: str) -> None:
  """Raises MissingSplitError, saying how to hold out part of 'train', where
  `source` has no split `name`."""
  if name not in present:
    raise MissingSplitError(
        f'{source} has no split {name!r}; it has {sorted(present)}. To hold '
        "out part of 'train' for evaluation, use e.g. "
        "--config.data.train_split='train[:90%]' "
        "--config.data.eval_split='train[90%:]'.")


# --- Image folders and archives ----------------------------------------------


def load(source: str, name: str, cache_dir: str | None = None,
         num_workers: int | None = None):
  """(images, labels, class_names) of the whole split `name` of a local
  source, sorted by class, then file name; decoded once, then read from the
  cache (`cache_dir`, default DEFAULT_CACHE_DIR)."""
  source = local_path(source)
  cache_path = _cache_path(source, name, cache_dir)
  if os.path.exists(cache_path):
    with np.load(cache_path) as cached:
      images, labels = cached['images'], cached['labels']
      class_names = [str(c) for c in cached['class_names']]
  else:
    images, labels, class_names = _decode_split(source, name, num_workers)
    _save_npz(cache_path, images=images, labels=labels,
              class_names=np.array(class_names))
  return images, labels, class_names


def local_path(given: str) -> str:
  """A local source as an absolute path, checked: it exists and is readable."""
  source = os.path.abspath(os.path.expanduser(given))
  if not os.path.exists(source):
    raise DataError(
        f"Data source {given!r} does not exist. Set --config.data.source "
        "to 'tfds', 'synthetic' or an image folder or .tar.gz/.zip archive.")
  mode = os.R_OK | (os.X_OK if os.path.isdir(source) else 0)
  if not os.access(source, mode):
    raise DataError(
        f'Data source {source} is not readable by this user: fix its '
        f'permissions (e.g. chmod -R a+rX {source}) or copy it elsewhere.')
  return source


def _decode_split(source: str, split: str, num_workers: int | None):
  """Reads and decodes one split: (images, labels, class_names)."""
  names, read = _open_source(source)
  splits = _index_layout(names, source)
  check_split_present(split, list(splits), source)
  class_names = sorted({c for files in splits.values() for c, _ in files})
  files = splits[split]  # [(class, path)], sorted
  paths = [path for _, path in files]
  images = _decode_images([(p, read(p)) for p in paths],
                          num_workers or os.cpu_count() or 1)
  labels = np.array([class_names.index(c) for c, _ in files], np.int32)
  return _stack_same_size(images, paths, source), labels, class_names


def _is_image(path: str) -> bool:
  parts = path.split('/')
  hidden = any(p.startswith('.') or p == '__MACOSX' for p in parts)
  return not hidden and path.lower().endswith(IMAGE_EXTENSIONS)


def _open_source(source: str) -> tuple[list[str], Callable[[str], bytes]]:
  """Sorted image paths ('/'-separated, relative) and a reader for them."""
  if os.path.isdir(source):
    return ([rel for rel, _ in _walk_images(source)],
            lambda rel: pathlib.Path(source, rel).read_bytes())
  if zipfile.is_zipfile(source):
    with zipfile.ZipFile(source) as archive:
      files = {posixpath.normpath(n): archive.read(n)
               for n in archive.namelist() if _is_image(posixpath.normpath(n))}
  elif tarfile.is_tarfile(source):
    # One sequential pass: seeking back in a .tar.gz would decompress again.
    with tarfile.open(source) as archive:
      files = {posixpath.normpath(m.name): archive.extractfile(m).read()
               for m in archive
               if m.isfile() and _is_image(posixpath.normpath(m.name))}
  else:
    raise DataError(
        f'{source} is neither a folder nor a .tar.gz/.tgz/.zip archive.')
  return sorted(files), files.__getitem__


def _walk_images(root: str) -> Iterator[tuple[str, os.stat_result]]:
  """(relative path, stat) of every image under `root`, sorted."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for filename in sorted(filenames):
      path = os.path.join(dirpath, filename)
      rel = os.path.relpath(path, root).replace(os.sep, '/')
      if _is_image(rel):
        yield rel, os.stat(path)


def _index_layout(paths: list[str], source: str) -> dict[str, list]:
  """Groups `[<wrapper>/]<split>/<class>/<image>` paths by split.

  Returns: {split: [(class, path), ...] sorted by class, then file name}.
  """
  if not paths:
    raise DataError(f'{source} holds no {"/".join(IMAGE_EXTENSIONS)} images.')
  parts = [p.split('/') for p in paths]
  depth = 0  # Number of wrapping folders that every path shares.
  while (all(len(p) > depth + 3 for p in parts) and
         len({p[depth] for p in parts}) == 1):
    depth += 1
  splits = collections.defaultdict(list)
  for path, p in zip(paths, parts):
    if len(p) != depth + 3:
      raise DataError(f'{source}: expected images at <split>/<class>/<image>,'
                       f' but found {path!r}.')
    splits[p[depth]].append((p[depth + 1], path))
  return {s: sorted(files) for s, files in splits.items()}


def _decode_image(path: str, data: bytes) -> np.ndarray:
  """Encoded image file -> (H, W, 3) uint8."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      return np.asarray(image.convert('RGB'), np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'Cannot decode image {path!r} ({e}); remove or replace '
                     'this file.') from e


def _decode_chunk(items: list[tuple[str, bytes]]) -> list[np.ndarray]:
  return [_decode_image(path, data) for path, data in items]


def _decode_images(items: list[tuple[str, bytes]],
                   num_workers: int) -> list[np.ndarray]:
  """Decodes (path, bytes) pairs, in `num_workers` processes if > 1."""
  if num_workers <= 1 or len(items) <= _DECODE_CHUNK:
    return _decode_chunk(items)
  chunks = [items[i:i + _DECODE_CHUNK]
            for i in range(0, len(items), _DECODE_CHUNK)]
  # Processes, since Pillow holds the GIL for most of a small image's decode;
  # 'spawn', since forking a process that runs JAX's threads can deadlock.
  context = multiprocessing.get_context('spawn')
  try:
    with concurrent.futures.ProcessPoolExecutor(num_workers,
                                                mp_context=context) as pool:
      return [image for chunk in pool.map(_decode_chunk, chunks)
              for image in chunk]
  except concurrent.futures.process.BrokenProcessPool:
    logging.warning(
        'Decoding processes died (does the main script lack an `if __name__ '
        "== '__main__':` guard?); decoding in this process instead.")
    return _decode_chunk(items)


def _stack_same_size(images: list[np.ndarray], paths: list[str],
                     source: str) -> np.ndarray:
  """list of (H, W, 3) -> (N, H, W, 3), checking that all sizes agree."""
  shape = images[0].shape
  for image, path in zip(images, paths):
    if image.shape != shape:
      raise DataError(
          f'{source}: all images of a split must have one size, but {path!r} '
          f'is {image.shape[1]}x{image.shape[0]} while {paths[0]!r} is '
          f'{shape[1]}x{shape[0]} (width x height). Resize or remove it.')
  return np.stack(images)


# --- Cache ------------------------------------------------------------------


def _cache_path(source: str, split: str, cache_dir: str | None) -> str:
  """Cache file of `split`; its name changes whenever the source changes."""
  digest = hashlib.sha256(f'v{_CACHE_VERSION}'.encode())
  if os.path.isdir(source):
    for rel, stat in _walk_images(source):
      digest.update(f'{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  else:
    with open(source, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        digest.update(block)
  stem = os.path.basename(source.rstrip(os.sep)).split('.')[0]
  cache_dir = os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR)
  return os.path.join(cache_dir,
                      f'{stem}-{split}-{digest.hexdigest()[:16]}.npz')


def _save_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes atomically, so readers never see a partial file."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
    try:
      with os.fdopen(fd, 'wb') as f:
        np.savez(f, **arrays)
      os.replace(tmp_path, path)
    except BaseException:
      os.unlink(tmp_path)
      raise
  except OSError as e:
    logging.warning('Not caching decoded images at %s: %s', path, e)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of (N, H, W, 3) uint8 images in [0, 1] units,
  (3,) each."""
  counts = np.zeros((3, 256))  # Histogram of each channel's uint8 values.
  for start in range(0, len(images), 4096):  # Bounds the temporaries.
    pixels = images[start:start + 4096].reshape(-1, 3)  # (B*H*W, 3)
    counts += [np.bincount(pixels[:, c], minlength=256) for c in range(3)]
  values = np.arange(256) / 255.0
  mean = counts @ values / counts.sum(1)
  var = counts @ values**2 / counts.sum(1) - mean**2
  return mean.astype(np.float32), np.sqrt(np.maximum(var, 0)).astype(
      np.float32)

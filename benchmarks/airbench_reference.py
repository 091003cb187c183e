"""airbench's 93% CIFAR-10 recipe in PyTorch on the CPU: a time-to-accuracy anchor.

  python -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/torchenv/bin/pip install numpy pillow absl-py
  /tmp/torchenv/bin/python benchmarks/airbench_reference.py \
      --source=PATH/TO/cifar10-train-jpeg.tar.gz [--epochs=11] \
      [--wall_budget_s=SECONDS] [--seed=0] [--json]

(Where that wheel index cannot be reached, `pip install torch numpy pillow
absl-py` from the default index works too: a larger wheel, the same CPU code.)

How fast does a well-tuned small convnet recipe reach which accuracy, in wall
time, on the same data and machine as ours? This is a port of Keller Jordan's
cifar10-airbench `airbench/lib_airbench93.py` (`make_net93`, `train93`, `hyp`)
and the parts of `airbench/utils.py` it uses (`CifarLoader` with flip and
translate, `train`, `infer`/`evaluate`, the whitening init, `LookaheadState`),
with upstream's hyperparameters, to float32 PyTorch on the CPU (channels_last,
so oneDNN's convolutions run; one thread per core):

- net93 (~0.57M parameters): a 2x2 conv 3->24 without padding whose weights
  are the eigenvectors of the 2x2-patch covariance of 5,000 training images,
  scaled by 1/sqrt(eigenvalue + 5e-4), and their negatives, frozen (its bias
  trains for the first 3 epochs only); GELU; three ConvGroups of widths
  64/128/128, each conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU
  (convs without bias, dirac-initialised on the first c_in filters; BN with a
  fixed weight of 1, eps 1e-12, running-stat momentum 0.6 in upstream's
  convention, i.e. 0.4 in PyTorch's); maxpool3; linear 128->10 without bias;
  times 1/9.
- Label smoothing 0.2, loss summed over the batch; Nesterov SGD, momentum
  0.85, in upstream's decoupled form: lr 11.5 and weight decay 0.0153 per 1024
  examples, the BN biases' lr x64; the lr factor rises linearly 0.2 -> 1.0 over
  the first 23% of the steps, then falls linearly to 0.07; batch 1024 (the
  last partial batch of an epoch dropped); a lookahead EMA every 5 steps with
  decay 0.95^5 * (step / total steps)^3, and at the end the net set to it.
- Augmentation: random translation by up to 2 pixels (reflect padding);
  "alternating flip": the training set is flipped at random once, then all of
  it is flipped on every odd epoch. Evaluation with test-time augmentation
  level 2: the mean of the logits of the image and its mirror, averaged with
  that of the 1-pixel diagonal translates (reflect padding).

Deliberate differences, all forced by the setting: float32 on the CPU (not
float16 on a GPU); the data below, not torchvision's CIFAR-10; normalisation
with the per-channel mean/std of our training split (upstream: CIFAR-10's
published constants); the 5,000 whitening images are every 9th image of our
class-sorted training split (upstream: the first 5,000 of CIFAR-10's stored,
class-mixed order).

Data: exactly this project's, read by its jax-free loader (local_data.py,
as input_pipeline.py does; `train[:90%]` for training, `train[90%:]` for
validation): `--source` is a folder or archive of
`[<folder>/]train/<class>/<image>.jpg`; classes sorted by name get ids 0..9;
within each class, files sorted by name, the first 90% train and the rest
validate (45,000 / 5,000 for CIFAR-10, checked). The decoded split is read
from, or written to, the project's cache (`--cache_dir`), so either tool
reuses the other's decode.

`--epochs` (default 11, as upstream) sets the lr and lookahead schedules; a
fraction cuts the last epoch short. `--wall_budget_s` stops training once that
many seconds of wall time have passed since the start (data loading
included), checked after every step, then syncs the lookahead weights and
runs the final evaluation: the anchor held to our recipe's wall budget. The
schedules still follow `--epochs`, so a cut run has not decayed its lr; to fit
a whole schedule in a budget, lower `--epochs` instead.

Prints the parameter count, one line per epoch (train loss and accuracy of
the epoch's last batch, as upstream; validation accuracy without TTA; wall
seconds since the start, data loading and evaluations included), then the
final TTA validation accuracy, epochs done, wall seconds, training images/s
(the training loop: each epoch's augmentation and its steps, as upstream
times it; evaluations excluded), and the host: the CPU model, whether /proc/cpuinfo lists
avx512f / avx512_bf16 / amx_bf16, and the GF/s of a plain 2048x2048 float32
GEMM through torch in this process (median of 5, after training). With
--json, the epoch lines go to stderr and stdout gets one JSON object: the
per-epoch curve (epoch, wall_s, val_acc, ...) and those final figures.
Needs only torch, numpy, Pillow and absl-py; not a dependency of the project
and not run by the tests.
"""

import json
import math
import os
import statistics
import sys
import time

from absl import app, flags
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# The repository root, for local_data.py: torch's venv has no project install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import local_data  # noqa: E402

# Upstream's `hyp` (lib_airbench93.py) and the defaults of utils.train.
HYP = {
    'batch_size': 1024,
    'lr': 11.5,               # per 1024 examples
    'momentum': 0.85,
    'weight_decay': 0.0153,   # per 1024 examples, decoupled from the lr
    'bias_scaler': 64.0,      # lr (not wd) multiplier of the BN biases
    'label_smoothing': 0.2,
    'whiten_bias_epochs': 3,
    'translate': 2,
    'widths': (64, 128, 128),
    'batchnorm_momentum': 0.6,  # upstream's convention: PyTorch's is 1 - this
    'scaling_factor': 1 / 9,
    'tta_level': 2,
    'lr_peak': 0.23,          # fraction of the steps spent warming up
    'lr_end': 0.07,
    'whiten_images': 5000,
    'whiten_eps': 5e-4,
    'lookahead_every': 5,
}

flags.DEFINE_string('source', None, 'The CIFAR-10 archive: a .tar.gz of '
                    '[<folder>/]train/<class>/<image>.jpg, e.g. '
                    'PATH/TO/cifar10-train-jpeg.tar.gz.')
flags.DEFINE_float('epochs', 11.0, 'Training epochs (upstream: 11); a '
                   'fraction cuts the last epoch short.')
flags.DEFINE_float('wall_budget_s', None, 'If set, stop training once this '
                   'many seconds of wall time have passed since the start '
                   '(data loading included), then sync and evaluate.')
flags.DEFINE_integer('seed', 0, 'torch seed: init, flips, crops, order.')
flags.DEFINE_bool('json', False, 'Epoch lines to stderr, one JSON object to '
                  'stdout.')
flags.DEFINE_string('cache_dir', local_data.DEFAULT_CACHE_DIR, 'Where the '
                    "decoded split is cached (the project's cache).")
flags.DEFINE_integer('log_every_steps', 0, 'If > 0, also print the training '
                     'loss every this many steps.')
FLAGS = flags.FLAGS

# --- Data: the project's local loader, cache and split rule (local_data.py) --


def split_train_val(labels):
  """Indices of train[:90%] and train[90%:], checked."""
  train = local_data.stratified_range(labels, 0, 90)
  val = local_data.stratified_range(labels, 90, 100)
  if (len(train) + len(val) != len(labels) or
      len(np.union1d(train, val)) != len(labels)):
    raise AssertionError('train[:90%] and train[90%:] must partition train.')
  if len(labels) == 50_000 and (len(train), len(val)) != (45_000, 5_000):
    raise AssertionError(f'CIFAR-10 split sizes {len(train)}/{len(val)}, '
                         'expected 45,000/5,000.')
  return train, val


def to_tensor(images, mean, std):
  """(N,H,W,3) uint8 -> normalised (N,3,H,W) float32, channels_last."""
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
  x = (x - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(
      std).view(1, 3, 1, 1)
  return x.contiguous(memory_format=torch.channels_last)


# --- Augmentation and batching: utils.CifarLoader (flip, translate) ---------


def batch_flip_lr(x):
  flip = (torch.rand(len(x)) < 0.5).view(-1, 1, 1, 1)
  return torch.where(flip, x.flip(-1), x)


def batch_crop(padded, size):
  """Per-image random crop of `size` from `padded` (r = (side - size) / 2
  pixels of padding): a shift in [-r, r]^2, one copy per shift."""
  r = (padded.size(-1) - size) // 2
  shifts = torch.randint(-r, r + 1, size=(len(padded), 2))
  out = torch.empty((len(padded), padded.size(1), size, size))
  for sy in range(-r, r + 1):
    for sx in range(-r, r + 1):
      mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
      out[mask] = padded[mask, :, r + sy:r + sy + size, r + sx:r + sx + size]
  return out


class AltFlipLoader:
  """CifarLoader(aug={'flip': True, 'translate': 2}, altflip=True): the set is
  flipped at random once; each epoch a fresh random translation of it, all
  flipped on odd epochs, shuffled, in full batches."""

  def __init__(self, images, labels, batch_size, translate):
    self.images, self.labels = images, labels
    self.batch_size, self.translate = batch_size, translate
    self.epoch, self.padded = 0, None

  def __len__(self):
    return len(self.images) // self.batch_size

  def __iter__(self):
    if self.epoch == 0:
      flipped = batch_flip_lr(self.images)
      self.padded = F.pad(flipped, (self.translate,) * 4, 'reflect')
    images = batch_crop(self.padded, self.images.size(-1))
    if self.epoch % 2 == 1:
      images = images.flip(-1)
    self.epoch += 1
    order = torch.randperm(len(images))
    for i in range(len(self)):
      idx = order[i * self.batch_size:(i + 1) * self.batch_size]
      yield (images[idx].contiguous(memory_format=torch.channels_last),
             self.labels[idx])


# --- The network: lib_airbench93.make_net93 ---------------------------------


class BatchNorm(nn.BatchNorm2d):
  """No learned scale (weight fixed at 1), a learned bias."""

  def __init__(self, channels, momentum, eps=1e-12):
    super().__init__(channels, eps=eps, momentum=1 - momentum)
    self.weight.requires_grad = False


class Conv(nn.Conv2d):
  """Bias-free 'same' conv; the first c_in filters start as the identity."""

  def __init__(self, c_in, c_out, kernel_size=3, padding='same', bias=False):
    super().__init__(c_in, c_out, kernel_size, padding=padding, bias=bias)

  def reset_parameters(self):
    super().reset_parameters()
    if self.bias is not None:
      self.bias.data.zero_()
    w = self.weight.data
    nn.init.dirac_(w[:w.size(1)])


class ConvGroup(nn.Module):

  def __init__(self, c_in, c_out, momentum):
    super().__init__()
    self.conv1, self.pool = Conv(c_in, c_out), nn.MaxPool2d(2)
    self.norm1 = BatchNorm(c_out, momentum)
    self.conv2, self.norm2 = Conv(c_out, c_out), BatchNorm(c_out, momentum)
    self.activ = nn.GELU()

  def forward(self, x):
    x = self.activ(self.norm1(self.pool(self.conv1(x))))
    return self.activ(self.norm2(self.conv2(x)))


class Net93(nn.Module):

  def __init__(self, widths=HYP['widths'], momentum=HYP['batchnorm_momentum'],
               scale=HYP['scaling_factor']):
    super().__init__()
    self.whiten = Conv(3, 2 * 3 * 2**2, 2, padding=0, bias=True)
    self.whiten.weight.requires_grad = False
    self.activ = nn.GELU()
    c = [self.whiten.out_channels, *widths]
    self.groups = nn.Sequential(*(ConvGroup(c[i], c[i + 1], momentum)
                                  for i in range(len(widths))))
    self.pool = nn.MaxPool2d(3)
    self.linear = nn.Linear(widths[-1], 10, bias=False)
    self.scale = scale

  def forward(self, x):
    x = self.pool(self.groups(self.activ(self.whiten(x))))
    return self.linear(x.flatten(1)) * self.scale


def init_whitening(conv, images, eps=HYP['whiten_eps']):
  """utils.init_whitening_conv: weights from the (uncentred) covariance of
  every k x k patch of `images`: eigenvectors / sqrt(eigenvalue + eps),
  largest first, then their negatives."""
  c, (h, w) = images.size(1), conv.weight.shape[2:]
  patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(
      -1, c, h, w).float()
  flat = patches.view(len(patches), -1)
  cov = flat.T @ flat / len(flat)
  eigenvalues, eigenvectors = torch.linalg.eigh(cov, UPLO='U')
  eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
  eigenvectors = eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
  scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
  conv.weight.data[:] = torch.cat((scaled, -scaled))


class Lookahead:
  """utils.LookaheadState: every float tensor of the state dict (BN running
  stats included) moves to a lerp of itself and an EMA."""

  def __init__(self, net):
    self.ema = {k: v.clone() for k, v in net.state_dict().items()}

  @torch.no_grad()
  def update(self, net, decay):
    for ema, param in zip(self.ema.values(), net.state_dict().values()):
      if param.dtype in (torch.half, torch.float):
        ema.lerp_(param, 1 - decay)
        param.copy_(ema)


# --- Evaluation: utils.infer / evaluate -------------------------------------


def _net(net, x):
  return net(x.contiguous(memory_format=torch.channels_last))


def infer(net, images, tta_level):

  def mirror(x):
    return 0.5 * _net(net, x) + 0.5 * _net(net, x.flip(-1))

  def mirror_translate(x):
    padded = F.pad(x, (1,) * 4, 'reflect')
    translated = [padded[:, :, 0:32, 0:32], padded[:, :, 2:34, 2:34]]
    shifted = torch.stack([mirror(t) for t in translated]).mean(0)
    return 0.5 * mirror(x) + 0.5 * shifted

  fn = [lambda x: _net(net, x), mirror, mirror_translate][tta_level]
  net.eval()
  with torch.no_grad():
    return torch.cat([fn(x) for x in images.split(2000)])


def evaluate(net, images, labels, tta_level=0):
  logits = infer(net, images, tta_level)
  return (logits.argmax(1) == labels).float().mean().item()


# --- Host -------------------------------------------------------------------


def gemm_gflops(n=2048, runs=5):
  a, b = torch.randn(n, n), torch.randn(n, n)
  a @ b
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times) / 1e9


def cpu_info():
  model, flags_ = 'unknown', set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and model == 'unknown':
          model = value.strip()
        elif key.strip() == 'flags' and not flags_:
          flags_ = set(value.split())
  except OSError:
    pass
  return model, {f: f in flags_ for f in ('avx512f', 'avx512_bf16',
                                          'amx_bf16')}


# --- Training: utils.train ---------------------------------------------------


def main(argv):
  del argv
  started = time.perf_counter()
  wall = lambda: time.perf_counter() - started
  log_file = sys.stderr if FLAGS.json else sys.stdout
  log = lambda *a: print(*a, file=log_file, flush=True)
  if not FLAGS.source:
    raise app.UsageError('--source=PATH/TO/cifar10-train-jpeg.tar.gz is '
                         'required.')
  if FLAGS.epochs <= 0:
    raise app.UsageError('--epochs must be > 0.')
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  torch.manual_seed(FLAGS.seed)

  images, labels, class_names = local_data.load(FLAGS.source, 'train',
                                                FLAGS.cache_dir)
  train_idx, val_idx = split_train_val(labels)
  mean, std = local_data.channel_stats(images[train_idx])
  train_x = to_tensor(images[train_idx], mean, std)
  train_y = torch.from_numpy(labels[train_idx]).long()
  val_x = to_tensor(images[val_idx], mean, std)
  val_y = torch.from_numpy(labels[val_idx]).long()
  del images
  log(f'torch {torch.__version__}, {threads} threads, float32, '
      f'channels_last; train {len(train_y):,} / val {len(val_y):,} images of '
      f'{len(class_names)} classes, loaded in {wall():.1f} s')

  batch_size, momentum = HYP['batch_size'], HYP['momentum']
  loader = AltFlipLoader(train_x, train_y, batch_size, HYP['translate'])
  # Decoupled -> PyTorch SGD: with constant gradients, Nesterov steps are
  # 1 + 1/(1 - momentum) times the gradient; weight decay is given per
  # example and divided by the lr, as torch multiplies it back.
  kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
  lr = HYP['lr'] / kilostep_scale
  wd = HYP['weight_decay'] * batch_size / kilostep_scale
  lr_biases = lr * HYP['bias_scaler']
  steps_per_epoch = len(loader)
  if not steps_per_epoch:
    raise app.UsageError(f'The training split has {len(train_y)} images, '
                         f'fewer than one batch of {batch_size}.')
  total_steps = math.ceil(steps_per_epoch * FLAGS.epochs)

  net = Net93().to(memory_format=torch.channels_last)
  n_params = sum(p.numel() for p in net.parameters())
  n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
  log(f'net93: {n_params:,} parameters ({n_trainable:,} trained); '
      f'{steps_per_epoch} steps of {batch_size} per epoch, {total_steps} steps '
      f'for {FLAGS.epochs:g} epochs'
      + (f', wall budget {FLAGS.wall_budget_s:g} s'
         if FLAGS.wall_budget_s else ''))

  norm_biases = [p for m in net.modules() if isinstance(m, BatchNorm)
                 for p in [m.bias]]
  ids = {id(p) for p in norm_biases}
  others = [p for p in net.parameters()
            if p.requires_grad and id(p) not in ids]
  optimizer = torch.optim.SGD(
      [dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
       dict(params=others, lr=lr, weight_decay=wd / lr)],
      momentum=momentum, nesterov=True)
  warmup_steps = int(total_steps * HYP['lr_peak'])

  def lr_factor(step):
    if step < warmup_steps:
      frac = step / warmup_steps
      return 0.2 * (1 - frac) + 1.0 * frac
    frac = (step - warmup_steps) / (total_steps - warmup_steps)
    return 1.0 * (1 - frac) + HYP['lr_end'] * frac

  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
  loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP['label_smoothing'],
                                reduction='none')
  alpha = 0.95**5 * (torch.arange(total_steps + 1) / total_steps)**3
  lookahead = Lookahead(net)

  stride = max(1, len(train_x) // HYP['whiten_images'])
  init_whitening(net.whiten, train_x[::stride][:HYP['whiten_images']])

  def over_budget():
    return FLAGS.wall_budget_s is not None and wall() >= FLAGS.wall_budget_s

  step, train_seconds, curve, stopped = 0, 0.0, [], False
  for epoch in range(math.ceil(FLAGS.epochs)):
    if step < total_steps and over_budget():  # Between epochs.
      stopped = True
      lookahead.update(net, decay=1.0)
      log(f'wall budget of {FLAGS.wall_budget_s:g} s reached after step '
          f'{step} of {total_steps}')
      break
    net.whiten.bias.requires_grad = epoch < HYP['whiten_bias_epochs']
    net.train()
    tick = time.perf_counter()
    for inputs, targets in loader:
      outputs = net(inputs)
      loss = loss_fn(outputs, targets).sum()
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      scheduler.step()
      step += 1
      if FLAGS.log_every_steps and step % FLAGS.log_every_steps == 0:
        log(f'  step {step:4d}  loss {loss.item() / len(targets):.4f}  '
            f'wall_s {wall():7.1f}')
      if step % HYP['lookahead_every'] == 0:
        lookahead.update(net, decay=alpha[step].item())
      stopped = step < total_steps and over_budget()
      if step >= total_steps or stopped:
        lookahead.update(net, decay=1.0)  # The net takes the EMA weights.
        break
    train_seconds += time.perf_counter() - tick
    train_acc = (outputs.detach().argmax(1) == targets).float().mean().item()
    train_loss = loss.item() / len(targets)
    val_acc = evaluate(net, val_x, val_y)
    epochs_done = step / steps_per_epoch
    curve.append(dict(epoch=epochs_done, step=step, wall_s=wall(),
                      val_acc=val_acc, train_loss=train_loss,
                      train_acc=train_acc))
    log(f'epoch {epochs_done:6.2f}  train_loss {train_loss:.4f}  train_acc '
        f'{train_acc:.4f}  val_acc {val_acc:.4f}  wall_s {wall():7.1f}')
    if stopped:
      log(f'wall budget of {FLAGS.wall_budget_s:g} s reached after step '
          f'{step} of {total_steps}')
      break

  tta_val_acc = evaluate(net, val_x, val_y, HYP['tta_level'])
  wall_s = wall()
  images_per_s = step * batch_size / train_seconds if train_seconds else None
  gflops = gemm_gflops()
  model, cpu_flags = cpu_info()
  result = dict(
      recipe='airbench93 (cifar10-airbench airbench/lib_airbench93.py)',
      torch=torch.__version__, threads=threads, seed=FLAGS.seed,
      epochs_requested=FLAGS.epochs, wall_budget_s=FLAGS.wall_budget_s,
      params=n_params, trained_params=n_trainable,
      train_images=len(train_y), val_images=len(val_y),
      mean=mean.tolist(), std=std.tolist(), steps=step,
      total_steps=total_steps, stopped_by_wall_budget=stopped,
      curve=curve, tta_val_acc=tta_val_acc, epochs_done=step / steps_per_epoch,
      wall_s=wall_s, train_s=train_seconds, images_per_s=images_per_s,
      gemm_gflops=gflops, cpu_model=model, cpu_flags=cpu_flags, hyp=HYP)
  log(f'tta_val_acc {tta_val_acc:.4f}  epochs {step / steps_per_epoch:.2f} '
      f'({step} steps)  wall_s {wall_s:.1f}  train_s {train_seconds:.1f}  '
      f'images/s {images_per_s or 0:.1f} (training loop)')
  log(f'host: {model}; ' + ', '.join(f'{k} {"yes" if v else "no"}'
                                     for k, v in cpu_flags.items())
      + f'; GEMM GF/s {gflops:.1f} (2048x2048 float32, torch, '
      f'{threads} threads)')
  if FLAGS.json:
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
  app.run(main)

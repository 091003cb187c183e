"""The bench_train.py models' train step in PyTorch (oneDNN), for reference.

  python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch absl-py
  /tmp/torchenv/bin/python benchmarks/torch_reference.py [--json] [--models=g025,small]

What does a mature CPU framework reach on the same networks and machine?
This builds GoogLeNet-CIFAR (reduced modules at widths 0.25 / 0.5 / 1.0,
naive at 0.25) and the small Inception net as plain PyTorch modules
(Conv2d without bias -> BatchNorm2d -> ReLU, MaxPool2d, channels_last, so
oneDNN's direct convolution kernels run) and times one train step (forward,
cross-entropy, backward, Nesterov SGD with weight decay) on a random batch
of 128, float32: median of the rounds, after 2 warmup steps. It also times
the same three plain GEMMs as bench_train.py's `gemm_gflops` through torch
(MKL). Compare images/s with bench_train.py's `ours` column, run alone on
the same machine. Prints the torch version, thread count and GEMM GF/s,
then per model its parameter count, ms per step and images/s; with --json,
one JSON object of those. Needs only torch and absl-py (for its flags, as
every tool here); not a dependency of the project and not run by the tests
(the architecture is the same as models/, checked by parameter count against
scripts/model_table.py).
"""

import json
import statistics
import time

from absl import app, flags
import torch
from torch import nn
from torch.nn import functional as F

GOOGLENET = (  # Table 1 of the paper: (c1, r3, c3, r5, c5, pool_proj); 'pool'.
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), 'pool',
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128), 'pool',
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128))
SMALL = (('inception', 32, 32), ('inception', 32, 48), ('downsample', 80),
         ('inception', 112, 48), ('inception', 96, 64), ('inception', 80, 80),
         ('inception', 48, 96), ('downsample', 96),
         ('inception', 176, 160), ('inception', 176, 160))
MODELS = {  # name -> (builder, rounds, image size)
    'g025': (lambda: googlenet(0.25, reduced=True), 5, 32),
    'g05': (lambda: googlenet(0.5, reduced=True), 5, 32),
    'g10': (lambda: googlenet(1.0, reduced=True), 3, 32),
    'naive025': (lambda: googlenet(0.25, reduced=False), 5, 32),
    'small': (lambda: small_inception(), 5, 28),
}
GEMM_SHAPES = ((128 * 16 * 16, 256, 256), (128 * 32 * 32, 128, 128),
               (128 * 8 * 8, 1152, 256))

flags.DEFINE_list('models', list(MODELS), 'Subset of: ' + ', '.join(MODELS)
                  + '.')
flags.DEFINE_integer('batch', 128, 'Batch size.')
flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
FLAGS = flags.FLAGS


def conv_bn_relu(c_in, c_out, k, stride=1, padding='same'):
  return nn.Sequential(
      nn.Conv2d(c_in, c_out, k, stride, padding, bias=False),
      nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True))


class Branches(nn.Module):
  """Parallel branches on one input, concatenated on channels."""

  def __init__(self, *branches):
    super().__init__()
    self.branches = nn.ModuleList(branches)

  def forward(self, x):
    return torch.cat([b(x) for b in self.branches], 1)


def inception(c_in, c1, r3, c3, r5, c5, pp, reduced):
  """(module, out channels): reduced (Fig. 2b) or naive (Fig. 2a)."""
  pool = nn.MaxPool2d(3, 1, 1)
  if not reduced:
    return Branches(conv_bn_relu(c_in, c1, 1), conv_bn_relu(c_in, c3, 3),
                    conv_bn_relu(c_in, c5, 5), pool), c1 + c3 + c5 + c_in
  return Branches(
      conv_bn_relu(c_in, c1, 1),
      nn.Sequential(conv_bn_relu(c_in, r3, 1), conv_bn_relu(r3, c3, 3)),
      nn.Sequential(conv_bn_relu(c_in, r5, 1), conv_bn_relu(r5, c5, 5)),
      nn.Sequential(pool, conv_bn_relu(c_in, pp, 1))), c1 + c3 + c5 + pp


def head(layers, c_in):
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(c_in, 10))


def googlenet(width, reduced):
  """The CIFAR stem (3x3 conv to 192) and modules 3a..5b, as models/googlenet."""
  scaled = lambda c: max(1, round(c * width))
  c = scaled(192)
  layers = [conv_bn_relu(3, c, 3)]
  for spec in GOOGLENET:
    if spec == 'pool':
      layers.append(nn.MaxPool2d(3, 2, 1))
      continue
    module, c = inception(c, *map(scaled, spec), reduced=reduced)
    layers.append(module)
  return head(layers, c)


def small_inception():
  """Zhang et al. 2017's net (module=naive, no pool branch), as models/."""
  c, layers = 96, [conv_bn_relu(3, 96, 3)]
  for kind, *widths in SMALL:
    if kind == 'downsample':
      layers.append(Branches(conv_bn_relu(c, widths[0], 3, 2, 0),
                             nn.MaxPool2d(3, 2)))
      c += widths[0]
    else:
      layers.append(Branches(conv_bn_relu(c, widths[0], 1),
                             conv_bn_relu(c, widths[1], 3)))
      c = sum(widths)
  return head(layers, c)


def step_seconds(model, rounds, size, batch):
  model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                        nesterov=True, weight_decay=5e-4)
  x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
  y = torch.randint(0, 10, (batch,))

  def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()

  for _ in range(2):
    step()
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def gemm_gflops(m, k, n, calls=3):
  a, b = torch.randn(m, k), torch.randn(k, n)
  a @ b
  best = float('inf')
  for _ in range(calls):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
  return 2 * m * k * n / best / 1e9


def main(argv):
  del argv
  torch.manual_seed(0)
  result = {'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'batch': FLAGS.batch,
            'gemm_gflops': statistics.median(gemm_gflops(*s)
                                             for s in GEMM_SHAPES),
            'models': {}}
  for name in FLAGS.models:
    build, rounds, size = MODELS[name]
    model = build()
    t = step_seconds(model, rounds, size, FLAGS.batch)
    result['models'][name] = {
        'params': sum(p.numel() for p in model.parameters()),
        'step_ms': t * 1e3, 'images_per_s': FLAGS.batch / t}
  if FLAGS.json:
    print(json.dumps(result, indent=1))
    return
  print(f'torch {result["torch"]}, {result["threads"]} threads, batch '
        f'{FLAGS.batch}, float32; GEMM {result["gemm_gflops"]:.0f} GF/s')
  for name, r in result['models'].items():
    print(f'{name:9} {r["params"]:>9,} params {r["step_ms"]:8.1f} ms/step '
          f'{r["images_per_s"]:7.1f} img/s')


if __name__ == '__main__':
  app.run(main)

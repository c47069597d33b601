#!/usr/bin/env python3
"""Golden trajectories for the induced-metric optimisers, from a NumPy transcription.

No PyPI package carries the reference (arXiv:2509.03594, T. R. Harvey; code at
github.com/harveyThomas4692/Induced-Metric-Optimiser, optimisers/torch_imp.py),
so this script transcribes the update rule from the paper's equations and the
author's `CustomSGD` / `CustomSGDRMS` / `CustomSGDLog` in plain NumPy, kept
apart from steplab's JAX code (it imports nothing from `optimizers`):

    G = P^-1 + xi g g^T        =>   G^-1 g = P g / (1 + xi g^T P g)   (Sherman-Morrison)
    tr_t  = xi sum_i g_i (P g)_i                 P = I (sgd, log) or 1/(sqrt(v_hat)+eps) (rms)
    mu_t  = beta mu + (1 - beta) tr_t,  mu_hat = mu_t / (1 - beta^t)
    s_t   = 1 / (1 + |mu_hat|)          (log: L_t / (L_t^2 + mu_hat))
    m_t   = rho m + (1 - rho) g,  m_hat = m_t / (1 - rho^t)
    p    -= lr_t wd p;  p -= lr_t s_t m_hat (rms: m_hat * P)

Precision follows the author's torch code: tensors (p, g, m, v, the summed
trace, mu, s) in the run's dtype, the powers beta^t, rho^t, b_rms^t and the
learning rate as Python doubles.

The problem is a smooth, non-quadratic, positive loss on a Flax-shaped tree
(bias, dense kernel, conv kernel) with analytic gradients, so the log variant
sees a real loss value. Teacher forcing as in tools/make_golden.py: the file
stores g_t at p_t and p_{t+1}, plus the loss L_t (key `value`), and the tests
replay steplab's optimizer on the stored gradients and losses.

How to run (needs only numpy):

    python tools/induced_metric_reference.py              # -> tests/golden/im_*.npz
    python tools/induced_metric_reference.py --out /tmp/g

The file format is tools/make_golden.py's, with `meta["value"] = true` and a
float64 (T,) array `value`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "golden"
NUM_STEPS = 50
SPECS = [("bias", (5,)), ("dense", (4, 6)), ("conv", (3, 3, 2, 4))]


class Problem:
  """L(p) = sum_leaf sum a (p - c)^2 / 2 + q (p - c)^4 / 4, plus (u . dense - 1)^2 / 2."""

  def __init__(self, dtype, seed: int):
    rng = np.random.default_rng(seed)
    self.dtype = dtype
    self.a = {n: np.exp(rng.uniform(-2.0, 1.5, s)).astype(dtype) for n, s in SPECS}
    self.c = {n: rng.normal(0.0, 0.5, s).astype(dtype) for n, s in SPECS}
    # Starting near the minimum keeps xi g^T P g of order one: the metric
    # factor then moves through (0, 1) instead of pinning near 0.
    self.init = {n: (self.c[n] + rng.normal(0.0, 0.3, s)).astype(dtype) for n, s in SPECS}
    self.q = dtype(0.2)
    self.u = rng.normal(0.0, 0.5, SPECS[1][1]).astype(dtype)

  def loss_and_grad(self, p: dict) -> tuple[float, dict]:
    loss = self.dtype(0.0)
    grads = {}
    for n, _ in SPECS:
      d = p[n] - self.c[n]
      loss = loss + np.sum(self.a[n] * d * d / 2 + self.q * d**4 / 4)
      grads[n] = self.a[n] * d + self.q * d**3
    r = np.sum(self.u * p["dense"]) - self.dtype(1.0)
    loss = loss + r * r / 2
    grads["dense"] = grads["dense"] + r * self.u
    return float(loss), {n: g.astype(self.dtype) for n, g in grads.items()}


class InducedMetricReference:
  """The author's step, transcribed (one parameter group)."""

  def __init__(self, params: dict, variant: str, momentum=0.9, xi=0.1, beta=0.8, b_rms=0.99,
               eps=1e-8, weight_decay=0.0):
    assert variant in ("sgd", "rms", "log")
    self.variant, self.momentum, self.xi, self.beta = variant, momentum, xi, beta
    self.b_rms, self.eps, self.weight_decay = b_rms, eps, weight_decay
    dtype = next(iter(params.values())).dtype.type
    self.dtype = dtype
    self.m = {n: np.zeros_like(x) for n, x in params.items()}
    self.v = {n: np.zeros_like(x) for n, x in params.items()}
    self.metric_ema = dtype(0.0)
    self.step_count = 0
    self.scales = []

  def step(self, params: dict, grads: dict, lr: float, loss: float | None = None) -> dict:
    dt = self.dtype
    self.step_count += 1
    t = self.step_count
    if self.variant == "rms":
      trace_sum = dt(0.0)
      for n, g in grads.items():
        self.v[n] = dt(self.b_rms) * self.v[n] + dt(1 - self.b_rms) * g * g
        v_hat = self.v[n] / dt(1 - self.b_rms**t)
        trace_sum = trace_sum + np.sum(g * g / (np.sqrt(v_hat) + dt(self.eps)))
    else:
      trace_sum = sum((np.sum(g * g) for g in grads.values()), dt(0.0))
    trace = dt(self.xi) * trace_sum
    self.metric_ema = dt(self.beta) * self.metric_ema + dt(1 - self.beta) * trace
    mu_hat = self.metric_ema / dt(1 - self.beta**t)
    if self.variant == "log":
      L = dt(loss)
      scale = L / (L * L + mu_hat)
    else:
      scale = dt(1.0) / (dt(1.0) + np.abs(mu_hat))
    self.scales.append(float(scale))
    out = {}
    for n, p in params.items():
      self.m[n] = dt(self.momentum) * self.m[n] + dt(1 - self.momentum) * grads[n]
      m_hat = self.m[n] / dt(1 - self.momentum**t)
      p = p - dt(lr * self.weight_decay) * p
      if self.variant == "rms":
        v_hat = self.v[n] / dt(1 - self.b_rms**t)
        m_hat = m_hat / (np.sqrt(v_hat) + dt(self.eps))
      out[n] = (p - dt(lr) * scale * m_hat).astype(dt)
    return out


def warmup_cosine(peak: float, warmup: int = 5, floor: float = 0.1):
  def lrs(T):
    out = []
    for t in range(T):
      if t < warmup:
        out.append(peak * (t + 1) / warmup)
      else:
        frac = (t - warmup) / max(1, T - warmup - 1)
        out.append(peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))))
    return out
  return lrs


def constant(lr):
  return lambda T: [lr] * T


# name -> (steplab optimizer, variant, lr schedule, kwargs in steplab names, seed, description)
CASES = {
    "im_sgd_default": ("induced_metric_sgd", "sgd", constant(0.1), {}, 11, "reference defaults"),
    "im_sgd_wd_sched": ("induced_metric_sgd", "sgd", warmup_cosine(0.05),
                        dict(momentum=0.5, xi=0.3, beta=0.5, weight_decay=0.02), 12,
                        "warmup-cosine lr, weight decay, strong metric"),
    "im_rms_default": ("induced_metric_rms", "rms", constant(0.1), {}, 13, "reference defaults"),
    "im_rms_all": ("induced_metric_rms", "rms", warmup_cosine(0.03),
                   dict(momentum=0.8, xi=0.5, beta=0.9, b_rms=0.9, eps=1e-6, weight_decay=0.01), 14,
                   "every hyperparameter off its default, schedule"),
    "im_log_default": ("induced_metric_log", "log", constant(0.1), {}, 15, "reference defaults"),
    "im_log_wd_sched": ("induced_metric_log", "log", warmup_cosine(0.05),
                        dict(momentum=0.7, xi=0.01, beta=0.6, weight_decay=0.01), 16,
                        "warmup-cosine lr, weight decay, small xi"),
}


def run_case(name: str, dtype_name: str, out_dir: Path) -> Path:
  optimizer, variant, schedule, kwargs, seed, description = CASES[name]
  dtype = {"float32": np.float32, "float64": np.float64}[dtype_name]
  problem = Problem(dtype, seed)
  lrs = schedule(NUM_STEPS)
  ref_kwargs = {("beta_rms" if k == "b_rms" else k): v for k, v in kwargs.items()}
  reference = InducedMetricReference(problem.init, variant, **kwargs)
  params = dict(problem.init)
  traj = {n: [x] for n, x in params.items()}
  grads_traj = {n: [] for n in params}
  values = []
  for t in range(NUM_STEPS):
    loss, grads = problem.loss_and_grad(params)
    values.append(loss)
    for n in params:
      grads_traj[n].append(grads[n])
    params = reference.step(params, grads, lrs[t], loss if variant == "log" else None)
    for n in params:
      traj[n].append(params[n])
  scales = np.asarray(reference.scales)
  # The cases exist to exercise the metric: its factor must move away from 1.
  assert scales.min() < 0.9 and scales.max() > 1.2 * scales.min(), (name, scales.min(), scales.max())
  assert all(np.all(np.isfinite(np.stack(v))) for v in traj.values()), name
  meta = dict(
      case=name, optimizer=optimizer, kwargs=kwargs,
      reference=f"tools/induced_metric_reference.py ({variant}; CustomSGD{dict(sgd='', rms='RMS', log='Log')[variant]})",
      reference_kwargs=dict(lr=lrs[0], **ref_kwargs),
      versions=dict(numpy=np.__version__, python=sys.version.split()[0]),
      dtype=dtype_name, num_steps=NUM_STEPS, param_names=[n for n, _ in SPECS],
      torch_shapes={n: list(s) for n, s in SPECS},
      coverage=dict(min_scale=float(scales.min()), max_scale=float(scales.max())),
      description=description, value=True, scalars=["scale"],
  )
  arrays = {"meta": np.asarray(json.dumps(meta)), "lr": np.asarray(lrs, np.float64),
            "value": np.asarray(values, np.float64), "s/scale": scales}
  for n in params:
    arrays[f"p/{n}"] = np.stack(traj[n]).astype(dtype)
    arrays[f"g/{n}"] = np.stack(grads_traj[n]).astype(dtype)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{name}_{dtype_name}.npz"
  np.savez_compressed(path, **arrays)
  print(f"wrote {path} (metric factor {scales.min():.3g}..{scales.max():.3g})")
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
  parser.add_argument("--only", default=None, help="cases whose name contains this")
  args = parser.parse_args(argv)
  for name in CASES:
    if args.only and args.only not in name:
      continue
    for dtype_name in ("float32", "float64"):
      run_case(name, dtype_name, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())

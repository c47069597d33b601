#!/usr/bin/env python3
"""Generate golden optimizer trajectories from the PyTorch reference implementations.

What it produces
----------------
For every case below (a reference optimizer + hyper-parameters + learning-rate
schedule + small deterministic problem) and for each dtype in {float32, float64}
the script runs the *reference* PyTorch optimizer for T steps and writes
``{out}/{case}_{dtype}.npz``.  The steplab tests replay these trajectories with
teacher forcing: they feed the stored gradient ``g_t`` (computed by torch
autograd at ``p_t``) to the steplab optimizer and compare the resulting
parameters with the stored ``p_{t+1}``.  Only the optimizer's math is pinned,
not the loss function.

References: ``torch.optim.RAdam`` (torch), ``pytorch_optimizer.RAdam``
(pytorch_optimizer, a port of the original LiyuanLucasLiu/RAdam code, for
``degenerated_to_sgd=False``), ``adabound.AdaBound`` (adabound,
also AMSBound via ``amsbound=True``), ``adamod.AdaMod`` (adamod),
``adamp.AdamP`` and ``adamp.SGDP`` (adamp), ``prodigyopt.Prodigy``,
``dog.DoG``/``dog.LDoG``/``dog.PolynomialDecayAverager`` (dog-optimizer),
``schedulefree``'s SGD/AdamW/RAdam schedule-free optimizers and its
``ScheduleFreeWrapper`` (around torch SGD, Adagrad and Prodigy), and
``lion_pytorch.Lion`` (lion-pytorch), and
``adam_mini.Adam_mini`` (adam-mini) on a small named Transformer, stored under
Flax names and layouts (``kernel`` (in, out), ``embedding`` (vocab, dim),
``scale``) with the reference's own blocks in ``meta["reference_blocks"]``.

How to run
----------
In a virtualenv holding the pinned reference versions::

    python3 -m venv .venv-golden
    .venv-golden/bin/pip install numpy $(python3 tools/make_golden.py --requirements)  # PINS
    .venv-golden/bin/python tools/make_golden.py              # all cases -> tests/golden
    .venv-golden/bin/python tools/make_golden.py --only adamp # cases whose name contains "adamp"
    .venv-golden/bin/python tools/make_golden.py --out /tmp/g # another output folder

The run is deterministic (fixed numpy seeds, single-threaded deterministic
torch CPU ops) and takes a few seconds.  It prints one line per file written
with a coverage summary and fails loudly (AssertionError) if a case did not hit
the branches it exists for (e.g. RAdam's rectified and un-rectified regimes,
AdaBound's lower and upper clip, AdamP's channel / layer / no projection,
the original RAdam's motionless steps before rectification).

File format (contract with the tests)
-------------------------------------
One ``.npz`` (written with ``np.savez_compressed``) per (case, dtype); keys:

* ``meta``: 0-d numpy unicode string holding JSON with
  ``case``, ``optimizer`` (steplab name), ``kwargs`` (steplab keyword arguments
  WITHOUT ``learning_rate``), ``reference`` (e.g. ``"torch.optim.RAdam"``),
  ``reference_kwargs`` (exact kwargs passed to the reference constructor, lr is
  ``lr[0]``), ``versions`` (package -> version), ``dtype``, ``num_steps`` (T),
  ``param_names`` (ordered), ``torch_shapes`` (name -> torch shape),
  ``coverage`` (counters proving which branches were hit), ``description``.
* ``lr``: float64 array (T,), learning rate used at step t.  The reference is
  constructed with ``lr=lr[0]`` and ``param_group["lr"] = lr[t]`` is set before
  step t (AdaBound's bounds therefore follow ``final_lr * lr[t] / lr[0]``).
* ``p/{name}``: (T+1, *flax_shape), ``p[0]`` initial value, ``p[t+1]`` after step t.
* ``g/{name}``: (T, *flax_shape), gradient used at step t (autograd at ``p[t]``).
* ``x/{name}`` (only where ``meta["eval_params"]``): (T+1, *flax_shape), the
  reference's evaluation point (schedule-free x, an averaged iterate) after
  step t at ``x[t+1]``; ``x[0]`` is the initial value.
* ``s/{key}`` for each key in ``meta["scalars"]``: float64 (T,), a per-step
  scalar of the reference after step t (e.g. Prodigy's d).

Arrays have the file's dtype (except ``lr``).  Layout is Flax's (output channel
LAST): a torch tensor of rank r >= 2 with shape (O, I, *K) is stored as
``np.transpose(x, tuple(range(2, r)) + (1, 0))`` i.e. (*K, I, O); rank 1 is kept.

Compatibility note: adabound 0.0.5 and adamod 0.0.3 use the deprecated
overloads ``Tensor.add_(Number, Tensor)`` / ``addcmul_(Number, Tensor, Tensor)``
/ ``Tensor.add(Number, Tensor)``.  torch 2.13 still accepts them (it only emits
a UserWarning, silenced below), so no shim is installed; the script checks at
start-up that the deprecated overloads give bit-identical results to the
``alpha=`` / ``value=`` forms and aborts otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import importlib.metadata
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# The reference packages, pinned (distribution -> version): a new reference is one entry here
# and its Case in CASES (a torch.optim.Optimizer needs nothing else: `reference` is its dotted path).
PINS = {
    "torch": "2.13.0",
    "adabound": "0.0.5",
    "adam-mini": "1.1.1",
    "adamod": "0.0.3",
    "adamp": "0.3.0",
    "dog-optimizer": "1.0.3",
    "lion-pytorch": "0.2.5",
    "prodigyopt": "1.1.2",
    "pytorch_optimizer": "4.1.0",
    "schedulefree": "1.4.1",
}
if __name__ == "__main__" and sys.argv[1:] == ["--requirements"]:  # Before importing them.
    print(" ".join(f"{dist}=={version}" for dist, version in PINS.items()))
    sys.exit(0)

import numpy as np
import torch
import torch.nn.functional as F

import adam_mini as adam_mini_ref  # PyPI adam-mini
import dog as dog_optimizer  # PyPI dog-optimizer
import prodigyopt
import schedulefree
import logging

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "golden"
NUM_STEPS = 50
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Branch decisions (AdamP/SGDP projection) must not be borderline: the relative
# distance between max|cos| and its threshold must exceed this at every decision,
# so that ulp-level differences in a replay cannot flip the branch.
MIN_PROJECTION_MARGIN = 0.02
# Same idea for RAdam's rho_t > 5 test (absolute distance).
MIN_RHO_MARGIN = 1e-3
# And for Lion's sign: |b1 m + (1 - b1) g| over |b1 m| + |(1 - b1) g| (float32 rounds at 6e-8).
MIN_SIGN_MARGIN = 1e-4

logging.getLogger("dog").setLevel(logging.ERROR)  # Its "do not change lr" advice, per step.
warnings.filterwarnings("ignore", message=r"This overload of add", category=UserWarning)
warnings.filterwarnings("ignore", message=r"This overload of addcmul", category=UserWarning)


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------

def versions() -> dict:
    """The installed versions of PINS' packages (each must be its pin), numpy and python."""
    out = {"torch": torch.__version__}
    for dist, pin in PINS.items():
        installed = importlib.metadata.version(dist)
        if installed.split("+")[0] != pin:  # torch's "2.13.0+cpu" is 2.13.0.
            raise SystemExit(f"{dist} {installed} is installed, the golden data pins {pin}: pip install {dist}=={pin}")
        out.setdefault(dist, installed)
    out["numpy"] = importlib.metadata.version("numpy")
    out["python"] = sys.version.split()[0]
    return out


def check_deprecated_overloads() -> None:
    """The old packages call deprecated overloads; make sure they are the same math."""
    for dt in DTYPES.values():
        g = torch.Generator().manual_seed(0)
        a = torch.randn(257, generator=g, dtype=dt)
        b = torch.randn(257, generator=g, dtype=dt)
        c = torch.randn(257, generator=g, dtype=dt)
        for s in (0.1, 1 - 0.9, 1 - 0.999, -1e-3 * 0.1, 0.05):
            assert torch.equal(a.clone().add_(s, b), a.clone().add_(b, alpha=s))
            assert torch.equal(a.add(s, b), a.add(b, alpha=s))
            assert torch.equal(a.clone().addcmul_(s, b, c), a.clone().addcmul_(b, c, value=s))


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------

BASE_SPECS = [("bias", (5,)), ("dense", (6, 4)), ("conv", (3, 2, 3, 2))]
# Scale-invariant extras (AdamP / SGDP): the loss sees conv_si only through
# w / |w| per output channel and dense_si only through w / |w|_F.
SI_SPECS = [("conv_si", (4, 2, 3, 2)), ("dense_si", (5, 3))]
FLAT_SPECS = [("bias", (5,)), ("vec", (13,))]


# A one-layer named Transformer LM (Adam-mini's partition reads the names):
# embedding, positions, q/k/v/o projections (grouped-query when kv heads <
# heads), MLP, norms with and without bias, an "ln_f" final norm, an output head.
TF_DIM, TF_HEADS, TF_VOCAB, TF_LEN, TF_MLP, TF_BATCH = 8, 2, 11, 6, 16, 3


def transformer_specs(kv_heads: int) -> list:
    hd = TF_DIM // TF_HEADS
    return [
        ("embed.weight", (TF_VOCAB, TF_DIM)), ("pos_emb", (TF_LEN, TF_DIM)),
        ("layers.0.norm1.weight", (TF_DIM,)), ("layers.0.norm1.bias", (TF_DIM,)),
        ("layers.0.attn.q_proj.weight", (TF_DIM, TF_DIM)), ("layers.0.attn.q_proj.bias", (TF_DIM,)),
        ("layers.0.attn.k_proj.weight", (kv_heads * hd, TF_DIM)),
        ("layers.0.attn.v_proj.weight", (kv_heads * hd, TF_DIM)),
        ("layers.0.attn.o_proj.weight", (TF_DIM, TF_DIM)), ("layers.0.norm2.weight", (TF_DIM,)),
        ("layers.0.mlp.fc1.weight", (TF_MLP, TF_DIM)), ("layers.0.mlp.fc1.bias", (TF_MLP,)),
        ("layers.0.mlp.fc2.weight", (TF_DIM, TF_MLP)), ("ln_f.weight", (TF_DIM,)),
        ("lm_head.weight", (TF_VOCAB, TF_DIM)),
    ]


def flax_name(torch_name: str, rank: int) -> tuple[str, bool]:
    """(Flax-style name, whether the torch tensor is transposed to Flax layout)."""
    if torch_name == "embed.weight":
        return "embed.embedding", False  # nn.Embed keeps (vocab, dim).
    if torch_name.endswith(".weight"):
        return torch_name[: -len(".weight")] + (".kernel" if rank >= 2 else ".scale"), rank >= 2
    return torch_name, False


class Problem:
    """Deterministic smooth non-quadratic loss over an ordered dict of torch tensors."""

    def __init__(self, kind: str, dtype: torch.dtype, seed: int):
        assert kind in ("base", "si", "flat", "transformer", "transformer_gqa")
        self.kind = kind
        self.dtype = dtype
        rng = np.random.default_rng(seed)
        if kind.startswith("transformer"):
            self.kv_heads = 1 if kind == "transformer_gqa" else TF_HEADS
            self.specs = transformer_specs(self.kv_heads)
            init = {}
            for n, s in self.specs:
                if n.endswith("bias"):
                    x = rng.normal(0.0, 0.1, s)
                elif len(s) == 1:
                    x = 1.0 + rng.normal(0.0, 0.1, s)
                else:
                    x = rng.normal(0.0, 0.4, s)
                init[n] = torch.tensor(x, dtype=dtype)
            self.init = init
            self.tokens = torch.tensor(rng.integers(0, TF_VOCAB, (TF_BATCH, TF_LEN + 1)))
            return
        if kind == "flat":  # Rank-1 leaves only: flattening is layout-free (Prodigy's slice_p).
            specs = FLAT_SPECS
        else:
            specs = BASE_SPECS + (SI_SPECS if kind == "si" else [])
        self.specs = specs

        def t(x):
            return torch.tensor(np.asarray(x, dtype=np.float64), dtype=dtype)

        self.init = {n: t(rng.normal(0.0, 0.8, s)) for n, s in specs}
        self.consts = {}
        if kind == "flat":
            for n, s in FLAT_SPECS:
                self.consts[f"a_{n}"] = t(np.exp(rng.uniform(-2.5, 2.0, s)))
                self.consts[f"c_{n}"] = t(rng.normal(0.0, 0.3, s))
                self.consts[f"u_{n}"] = t(rng.normal(0.0, 1.0, s))
            return
        for n, s in BASE_SPECS:
            # log-uniform curvature spreads gradient scales (AdaBound clipping)
            self.consts[f"a_{n}"] = t(np.exp(rng.uniform(-2.5, 2.0, s)))
            self.consts[f"c_{n}"] = t(rng.normal(0.0, 0.3, s))
        self.consts["x"] = t(rng.normal(0.0, 1.0, (4,)))
        self.consts["z"] = t(rng.normal(0.0, 1.0, (1, 2, 5, 4)))
        self.consts["u6"] = t(rng.normal(0.0, 1.0, (6,)))
        self.consts["u3"] = t(rng.normal(0.0, 1.0, (3,)))
        self.consts["v5"] = t(rng.normal(0.0, 1.0, (5,)))
        if kind == "si":
            cs = rng.normal(0.0, 1.0, (4, 12))
            cs /= np.linalg.norm(cs, axis=1, keepdims=True)
            self.consts["C_conv_si"] = t(cs.reshape(4, 2, 3, 2))
            self.consts["A_conv_si"] = t(np.exp(rng.uniform(-1.0, 1.0, (4, 2, 3, 2))))
            cd = rng.normal(0.0, 1.0, (5, 3))
            cd /= np.linalg.norm(cd)
            self.consts["C_dense_si"] = t(cd)
            self.consts["A_dense_si"] = t(np.exp(rng.uniform(-1.0, 1.0, (5, 3))))
            self.consts["u4"] = t(rng.normal(0.0, 1.0, (4,)))

    def transformer_loss(self, P: dict) -> torch.Tensor:
        B, T, D, H = TF_BATCH, TF_LEN, TF_DIM, TF_HEADS
        hd, kv = D // H, self.kv_heads
        x = P["embed.weight"][self.tokens[:, :-1]] + P["pos_emb"]
        h = F.layer_norm(x, (D,), P["layers.0.norm1.weight"], P["layers.0.norm1.bias"])
        q = (h @ P["layers.0.attn.q_proj.weight"].T + P["layers.0.attn.q_proj.bias"]).view(B, T, H, hd)
        k = (h @ P["layers.0.attn.k_proj.weight"].T).view(B, T, kv, hd).repeat_interleave(H // kv, dim=2)
        v = (h @ P["layers.0.attn.v_proj.weight"].T).view(B, T, kv, hd).repeat_interleave(H // kv, dim=2)
        scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        o = torch.einsum("bhts,bshd->bthd", att, v).reshape(B, T, D)
        x = x + o @ P["layers.0.attn.o_proj.weight"].T
        h = F.layer_norm(x, (D,), P["layers.0.norm2.weight"])
        h = F.gelu(h @ P["layers.0.mlp.fc1.weight"].T + P["layers.0.mlp.fc1.bias"])
        x = x + h @ P["layers.0.mlp.fc2.weight"].T
        x = F.layer_norm(x, (D,), P["ln_f.weight"])
        logits = x @ P["lm_head.weight"].T
        return F.cross_entropy(logits.reshape(B * T, -1), self.tokens[:, 1:].reshape(-1))

    def loss(self, P: dict) -> torch.Tensor:
        if self.kind.startswith("transformer"):
            return self.transformer_loss(P)
        k = self.consts
        total = torch.zeros((), dtype=self.dtype)
        if self.kind == "flat":
            r = -0.3
            for n, _ in FLAT_SPECS:
                p = P[n]
                total = total + 0.5 * (k[f"a_{n}"] * (p - k[f"c_{n}"]) ** 2).sum() + 0.025 * (p ** 4).sum()
                r = r + (k[f"u_{n}"] * torch.tanh(p)).sum()
            return total + 0.25 * r ** 2
        for n, _ in BASE_SPECS:
            p = P[n]
            total = total + 0.5 * (k[f"a_{n}"] * (p - k[f"c_{n}"]) ** 2).sum() + 0.025 * (p ** 4).sum()
        # Coupling term: tiny MLP/conv read-out mixing all base tensors.
        h = torch.tanh(P["dense"] @ k["x"])                     # (6,)
        s = F.conv2d(k["z"], P["conv"]).mean(dim=(0, 2, 3))     # (3,)
        r = (k["u6"] * h).sum() + (k["u3"] * torch.tanh(s)).sum() + (k["v5"] * P["bias"]).sum() - 0.3
        total = total + 0.25 * r ** 2 + 0.02 * r ** 4
        if self.kind == "si":
            w = P["conv_si"]
            wn = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # per-output-channel normalised
            total = total + 0.5 * (k["A_conv_si"] * (wn - k["C_conv_si"]) ** 2).sum()
            s2 = F.conv2d(k["z"], wn).mean(dim=(0, 2, 3))       # (4,)
            total = total + 0.3 * (k["u4"] * torch.tanh(s2)).sum()
            d = P["dense_si"]
            dn = d / d.norm()                                      # whole-tensor normalised
            total = total + 2.0 * (k["A_dense_si"] * (dn - k["C_dense_si"]) ** 2).sum()
            total = total + 0.5 * ((dn.sum(dim=1) - 0.2) ** 2).sum()
        return total


def to_flax(x: np.ndarray, rank: int) -> np.ndarray:
    """Torch (O, I, *K) -> Flax (*K, I, O) on the trailing `rank` axes (leading axes kept)."""
    if rank < 2:
        return x
    lead = x.ndim - rank
    axes = tuple(range(lead)) + tuple(lead + a for a in tuple(range(2, rank)) + (1, 0))
    return np.transpose(x, axes)


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

def constant(lr: float) -> Callable[[int], list]:
    return lambda T: [float(lr)] * T


def warmup_cosine(peak: float, warmup: int = 5, floor: float = 0.1) -> Callable[[int], list]:
    def f(T):
        out = []
        for t in range(T):
            if t < warmup:
                out.append(peak * (t + 1) / warmup)
            else:
                frac = (t - warmup) / (T - warmup)
                out.append(peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))))
        return out
    return f


# ---------------------------------------------------------------------------
# Instrumentation (records branches; never changes the reference's math)
# ---------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.cov: dict = {}

    def inc(self, key: str, n: int = 1) -> None:
        self.cov[key] = self.cov.get(key, 0) + int(n)

    def set_min(self, key: str, v: float) -> None:
        self.cov[key] = min(self.cov.get(key, math.inf), float(v))

    # -- hooks, called before and after each reference step ---------------------
    def before_step(self, family: str, opt, names: dict) -> None:
        getattr(self, f"_before_{family}", lambda *a: None)(opt, names)

    def after_step(self, family: str, opt, names: dict) -> None:
        getattr(self, f"_after_{family}", lambda *a: None)(opt, names)

    def _before_radam(self, opt, names):
        params = opt.param_groups[0]["params"]
        self._radam_before = [p.detach().clone() for p in params]
        self._radam_grads_nonzero = all(bool((p.grad != 0).any()) for p in params)

    def _after_radam(self, opt, names):
        # torch.optim.RAdam (rho_t > 5; below: SGD with momentum) or
        # pytorch_optimizer.RAdam (n_sma >= 5; below: SGD with degenerated_to_sgd,
        # else no step and no weight decay, as the original code). The two tests
        # agree while rho_min_abs_margin > 0.
        group = opt.param_groups[0]
        beta2 = group["betas"][1]
        p0 = group["params"][0]
        # pytorch_optimizer counts steps per group, torch per parameter (same for all).
        step = float(group["step"] if "step" in group else opt.state[p0]["step"])
        bias_correction2 = 1 - beta2 ** step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        self.set_min("rho_min_abs_margin", abs(rho_t - 5.0))
        if rho_t > 5.0:
            self.inc("rectified_steps")
            if "first_rectified_step" not in self.cov:
                self.cov["first_rectified_step"] = int(step)
        elif getattr(opt, "degenerated_to_sgd", True):  # torch's RAdam always degenerates.
            self.inc("sgd_steps")
        else:
            self.inc("unrectified_steps")
            still = all(torch.equal(p, b) for p, b in zip(group["params"], self._radam_before))
            # Unrectified steps with a nonzero gradient on every tensor that left
            # every parameter bit-identical (no step, no weight decay).
            self.inc("no_move_steps", still and self._radam_grads_nonzero)

    def _after_adabound(self, opt, names):
        group, base_lr = opt.param_groups[0], opt.base_lrs[0]
        beta1, beta2 = group["betas"]
        any_lo = any_hi = False
        for p in group["params"]:
            st = opt.state[p]
            # Reference formulas, recomputed on the post-step state (the moments
            # are updated before they are used, so they equal what the step used).
            v = st["max_exp_avg_sq"] if group["amsbound"] else st["exp_avg_sq"]
            denom = v.sqrt().add_(group["eps"])
            bc1 = 1 - beta1 ** st["step"]
            bc2 = 1 - beta2 ** st["step"]
            step_size = group["lr"] * math.sqrt(bc2) / bc1
            final_lr = group["final_lr"] * group["lr"] / base_lr
            lower = final_lr * (1 - 1 / (group["gamma"] * st["step"] + 1))
            upper = final_lr * (1 + 1 / (group["gamma"] * st["step"]))
            raw = torch.full_like(denom, step_size).div_(denom)
            lo = int((raw < lower).sum())
            hi = int((raw > upper).sum())
            self.inc("clip_lower_elems", lo)
            self.inc("clip_upper_elems", hi)
            self.inc("unclipped_elems", raw.numel() - lo - hi)
            any_lo |= lo > 0
            any_hi |= hi > 0
            if group["amsbound"]:
                self.inc("ams_max_gt_current_elems", int((st["max_exp_avg_sq"] > st["exp_avg_sq"]).sum()))
        self.inc("steps_with_lower_clip", any_lo)
        self.inc("steps_with_upper_clip", any_hi)

    def _after_dog(self, opt, names):
        group = opt.param_groups[0]
        rbar = group["rbar"]
        first = "dog_first_rbar" not in self.cov
        if first:
            self.cov["dog_first_rbar"] = float(torch.as_tensor(rbar).sum())
            if group["init_eta"] is not None:
                self.inc("init_eta_steps")
        elif float(torch.as_tensor(rbar).sum()) > self.cov["dog_first_rbar"]:
            self.inc("rbar_grew")

    def _after_prodigy(self, opt, names):
        group = opt.param_groups[0]
        k, d = group["k"], group["d"]
        prev_k, prev_d = self.cov.get("_k", 0), self.cov.get("_d", group["d0"])
        self.inc("no_step_zero_D" if k == prev_k else "steps")
        if d > prev_d:
            self.inc("d_grew")
        if math.isfinite(group["growth_rate"]) and k != prev_k and d == prev_d * group["growth_rate"]:
            self.inc("growth_rate_bound")
        self.cov["_k"], self.cov["_d"] = k, d

    def _before_lion(self, opt, names):
        # sign(b1 m + (1 - b1) g) must not sit at a rounding's distance from 0, or a
        # replay could flip it: the smallest |c| relative to its terms' magnitude.
        group = opt.param_groups[0]
        beta1 = group["betas"][0]
        for p in group["params"]:
            m = opt.state[p].get("exp_avg", torch.zeros_like(p))
            c = m * beta1 + p.grad * (1 - beta1)
            scale = m.abs() * beta1 + p.grad.abs() * (1 - beta1)
            self.set_min("sign_min_rel_margin", float((c.abs() / scale.clamp_min(1e-300)).min()))
            self.inc("sign_zero_elems", int((c == 0).sum()))

    def _after_schedule_free(self, opt, names):
        if opt.param_groups[0]["weight_sum"] > 0:
            self.inc("steps_with_weight")

    def _after_adamod(self, opt, names):
        group = opt.param_groups[0]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            st = opt.state[p]
            denom = st["exp_avg_sq"].sqrt().add_(group["eps"])
            bc1 = 1 - beta1 ** st["step"]
            bc2 = 1 - beta2 ** st["step"]
            step_size = group["lr"] * math.sqrt(bc2) / bc1
            raw = torch.full_like(denom, step_size).div_(denom)
            bound = int((st["exp_avg_lr"] < raw).sum())  # torch.min picks the smoothed lr
            self.inc("momental_bound_active_elems", bound)
            self.inc("momental_bound_inactive_elems", raw.numel() - bound)

    # -- AdamP / SGDP projection wrapper ---------------------------------------
    def wrap_projection(self, opt, names: dict, sgdp: bool) -> None:
        orig = opt._projection  # bound method of the reference class

        def projection(p, grad, perturb, delta, wd_ratio, eps):
            name = names[id(p)]
            hit = "none"
            for vname, view_func in (("channel", opt._channel_view), ("layer", opt._layer_view)):
                cos = opt._cosine_similarity(grad, p.data, eps, view_func)
                thr = delta / math.sqrt(view_func(p.data).size(1))
                cmax = cos.max()
                self.set_min("min_rel_margin", abs(float(cmax) - thr) / thr)
                if cmax < thr:  # identical test to the reference (tensor vs float)
                    hit = vname
                    break
            in_place_buf = sgdp and perturb.data_ptr() == opt.state[p]["momentum"].data_ptr()
            out, wd = orig(p, grad, perturb, delta, wd_ratio, eps)
            assert (wd == wd_ratio) == (hit != "none"), (name, hit, wd)
            self.inc(f"proj_{hit}")
            self.inc(f"view[{name}]={hit}")
            if in_place_buf and hit != "none":
                self.inc("momentum_buffer_projected_in_place")
            return out, wd

        opt._projection = projection  # instance attribute shadows the method


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    optimizer: str                 # steplab name
    family: str                    # radam | adabound | adamod | adamp | sgdp
    kwargs: dict                   # steplab kwargs (no learning_rate)
    reference: str
    reference_kwargs: dict         # without params / lr
    schedule: Callable[[int], list]
    description: str
    require: Callable[[dict], list] = field(default=lambda cov: [])
    problem: str = "base"
    seed: int = 0
    dtypes: tuple = tuple(DTYPES)
    # Optional hooks for references that are not one torch.optim.Optimizer:
    # build(params, lr0) -> opt (default reference_class(reference)(params, lr=lr0, **reference_kwargs)),
    # step(opt) (default opt.step()), eval_params(opt, params) -> {name: tensor}
    # (the evaluation point after the step, stored as x/<name>) and
    # scalars(opt) -> {key: float} (per-step values such as Prodigy's d, stored as s/<key>).
    mutates_grad: bool = False  # The reference adds weight decay into p.grad (DoG, Prodigy).
    named: bool = False  # build(named_parameters, lr0): the reference reads names (Adam-mini).
    zero_grad_steps: tuple = ()  # Steps whose gradient is replaced by zeros (stored as such).
    build: Callable | None = None
    averaging_gamma: float | None = None  # steplab side: chain(optimizer, polynomial_decay_averaging)
    step: Callable | None = None
    eval_params: Callable | None = None
    scalars: Callable | None = None


def reference_class(dotted: str):
    """The reference optimizer class named by its dotted path, e.g. "lion_pytorch.Lion"."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def radam_case(name, lr, desc, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=True, original=False, seed=1):
    """torch.optim.RAdam (SGD steps before rectification), or with `original`
    pytorch_optimizer.RAdam(degenerated_to_sgd=False): the original code's
    motionless steps before rectification (m and v still update)."""
    kw = dict(b1=b1, b2=b2, eps=eps, weight_decay=wd, decoupled_weight_decay=decoupled,
              degenerated_to_sgd=not original, nesterov=False)
    if original:
        # pytorch_optimizer's coupled decay (weight_decouple=False) is a no-op in
        # RAdam (it passes grad=None); the original code's decay is decoupled.
        assert decoupled, "pytorch_optimizer.RAdam: coupled weight decay is not applied"
        ref = "pytorch_optimizer.RAdam"
        ref_kw = dict(betas=[b1, b2], eps=eps, weight_decay=wd, weight_decouple=True, fixed_decay=False,
                      n_sma_threshold=5, degenerated_to_sgd=False, foreach=False)
        before = lambda c: [("unrectified_steps", c.get("unrectified_steps", 0) > 0),
                            ("no move in every unrectified step",
                             c.get("no_move_steps", 0) == c.get("unrectified_steps", 0))]
    else:
        ref = "torch.optim.RAdam"
        ref_kw = dict(betas=[b1, b2], eps=eps, weight_decay=wd, decoupled_weight_decay=decoupled, foreach=False)
        before = lambda c: [("sgd_steps", c.get("sgd_steps", 0) > 0)]
    return Case(
        name, "radam", "radam", kw, ref, ref_kw, lr, desc,
        require=lambda c: [("rectified_steps", c.get("rectified_steps", 0) > 0), *before(c),
                           ("rho margin", c["rho_min_abs_margin"] > MIN_RHO_MARGIN)],
        seed=seed)


def adabound_case(name, lr, desc, ams=False, b1=0.9, b2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
                  wd=0.0, both=False, seed=2):
    def req(c):
        r = [("clip active", c["clip_lower_elems"] + c["clip_upper_elems"] > 0),
             ("unclipped", c["unclipped_elems"] > 0)]
        if both:
            r += [("lower clip", c["clip_lower_elems"] > 0), ("upper clip", c["clip_upper_elems"] > 0)]
        if ams:
            r += [("ams max", c["ams_max_gt_current_elems"] > 0)]
        return r
    return Case(
        name, "amsbound" if ams else "adabound", "adabound",
        dict(b1=b1, b2=b2, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=wd),
        "adabound.AdaBound",
        dict(betas=[b1, b2], final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=wd, amsbound=ams),
        lr, desc, require=req, seed=seed)


def adamod_case(name, lr, desc, b1=0.9, b2=0.999, b3=0.999, eps=1e-8, wd=0.0, both=False, seed=3):
    def req(c):
        r = [("bound active", c["momental_bound_active_elems"] > 0)]
        if both:
            r += [("bound inactive", c["momental_bound_inactive_elems"] > 0)]
        return r
    return Case(
        name, "adamod", "adamod",
        dict(b1=b1, b2=b2, b3=b3, eps=eps, weight_decay=wd),
        "adamod.AdaMod",
        dict(betas=[b1, b2], beta3=b3, eps=eps, weight_decay=wd),
        lr, desc, require=req, seed=seed)


def _proj_req(c, need_buf=False):
    r = [("channel projection", c.get("proj_channel", 0) > 0),
         ("layer projection", c.get("proj_layer", 0) > 0),
         ("no projection", c.get("proj_none", 0) > 0),
         ("projection margin", c["min_rel_margin"] > MIN_PROJECTION_MARGIN)]
    if need_buf:
        r.append(("momentum buffer projected in place", c.get("momentum_buffer_projected_in_place", 0) > 0))
    return r


def adamp_case(name, lr, desc, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, delta=0.1, wd_ratio=0.1,
               nesterov=False, seed=4):
    kw = dict(b1=b1, b2=b2, eps=eps, weight_decay=wd, delta=delta, wd_ratio=wd_ratio, nesterov=nesterov)
    return Case(
        name, "adamp", "adamp", kw, "adamp.AdamP",
        dict(betas=[b1, b2], eps=eps, weight_decay=wd, delta=delta, wd_ratio=wd_ratio, nesterov=nesterov),
        lr, desc, require=_proj_req, problem="si", seed=seed)


def sgdp_case(name, lr, desc, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False, eps=1e-8,
              delta=0.1, wd_ratio=0.1, need_buf=False, seed=5):
    kw = dict(momentum=momentum, dampening=dampening, weight_decay=wd, nesterov=nesterov, eps=eps,
              delta=delta, wd_ratio=wd_ratio)
    return Case(
        name, "sgdp", "sgdp", kw, "adamp.SGDP", dict(kw),
        lr, desc, require=lambda c: _proj_req(c, need_buf), problem="si", seed=seed)


class _Averaged:
    """A reference optimizer followed by dog's PolynomialDecayAverager each step."""

    def __init__(self, opt, params: list, gamma: float):
        self.opt = opt
        self.module = torch.nn.Module()
        for i, p in enumerate(params):  # Parameters sharing storage with the live tensors.
            self.module.register_parameter(f"p{i}", torch.nn.Parameter(p.detach(), requires_grad=False))
        self.averager = dog_optimizer.PolynomialDecayAverager(self.module, gamma=gamma)
        self.param_groups, self.state = opt.param_groups, opt.state

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.opt.step()
        self.averager.step()

    def averaged(self, params: dict) -> dict:
        av = dict(self.averager.averaged_model.named_parameters())
        return {n: av[f"p{i}"] for i, n in enumerate(params)}


def dog_case(name, lr, desc, layerwise=False, reps_rel=1e-6, eps=1e-8, init_eta=None, wd=0.0,
             gamma=None, zero_grad_steps=(), seed=6):
    ref = "dog.LDoG" if layerwise else "dog.DoG"
    ref_kwargs = dict(reps_rel=reps_rel, eps=eps, init_eta=init_eta, weight_decay=wd)

    def build(params, lr0):
        opt = reference_class(ref)(params, lr=lr0, **ref_kwargs)
        return opt if gamma is None else _Averaged(opt, params, gamma)

    def req(c):
        r = [("distance grew after step 1", c.get("rbar_grew", 0) > 0)]
        if init_eta is not None:
            r.append(("init_eta step", c.get("init_eta_steps", 0) == 1))
        return r

    return Case(
        name, "ldog" if layerwise else "dog", "dog",
        dict(reps_rel=reps_rel, eps=eps, init_eta=init_eta, weight_decay=wd),
        ref + (f" + dog.PolynomialDecayAverager(gamma={gamma})" if gamma is not None else ""),
        ref_kwargs, lr, desc, require=req, seed=seed, mutates_grad=wd > 0, build=build,
        eval_params=None if gamma is None else (lambda opt, params: opt.averaged(params)),
        averaging_gamma=gamma, zero_grad_steps=zero_grad_steps)


def prodigy_case(name, lr, desc, b1=0.9, b2=0.999, b3=None, eps=1e-8, wd=0.0, decouple=True,
                 bias_correction=False, safeguard=False, d0=1e-6, d_coef=1.0, growth_rate=math.inf,
                 slice_p=1, zero_grad_steps=(), problem="base", need=(), seed=7):
    kw = dict(b1=b1, b2=b2, b3=b3, eps=eps, weight_decay=wd, decouple=decouple,
              use_bias_correction=bias_correction, safeguard_warmup=safeguard, d0=d0, d_coef=d_coef,
              growth_rate=growth_rate, slice_p=slice_p)
    ref = dict(betas=[b1, b2], beta3=b3, eps=eps, weight_decay=wd, decouple=decouple,
               use_bias_correction=bias_correction, safeguard_warmup=safeguard, d0=d0, d_coef=d_coef,
               growth_rate=growth_rate, slice_p=slice_p)
    return Case(
        name, "prodigy", "prodigy", kw, "prodigyopt.Prodigy", ref, lr, desc,
        require=lambda c: [("d grew", c.get("d_grew", 0) > 0)] + [(w, c.get(w, 0) > 0) for w in need],
        problem=problem, seed=seed, mutates_grad=wd > 0 and not decouple,
        zero_grad_steps=zero_grad_steps, scalars=lambda opt: {"d": opt.param_groups[0]["d"]})


def _sf_eval(opt, params: dict) -> dict:
    """The reference's x = y.lerp(z, 1 - 1/b1), on copies (no train/eval round trip)."""
    group = opt.param_groups[0]
    b1 = getattr(opt, "momentum", None) or group.get("momentum") or group["betas"][0]
    return {n: p.detach().clone().lerp_(opt.state[p]["z"], weight=1 - 1 / b1) for n, p in params.items()}


def _sf_scalars(opt) -> dict:
    group = opt.param_groups[0]
    return {"weight_sum": group["weight_sum"], "lr_max": group["lr_max"]}


def sf_case(name, lr, desc, kind, seed=8, zero_grad_steps=(), **kw):
    """schedulefree's SGD / AdamW / RAdam; kw are steplab argument names."""
    ref_name = {"sgd": "schedulefree.SGDScheduleFree", "adamw": "schedulefree.AdamWScheduleFree",
                "radam": "schedulefree.RAdamScheduleFree"}[kind]
    ref = {k: v for k, v in kw.items() if k not in ("b1", "b2")}
    if kind == "sgd":
        ref["momentum"] = kw.get("b1", 0.9)
    else:
        ref["betas"] = [kw.get("b1", 0.9), kw.get("b2", 0.999)]
    ref["foreach"] = False

    def build(params, lr0):
        opt = reference_class(ref_name)(params, lr=lr0, **_ref_kwargs(ref))
        opt.train()
        return opt

    return Case(
        name, f"schedule_free_{kind}", "schedule_free", kw, ref_name, ref, lr, desc, seed=seed,
        require=lambda c: [("weights moved", c.get("steps_with_weight", 0) > 0)],
        mutates_grad=True, build=build, eval_params=_sf_eval, scalars=_sf_scalars,
        zero_grad_steps=zero_grad_steps)


class _Wrapped:
    """schedulefree.ScheduleFreeWrapper around a torch base, in train mode."""

    def __init__(self, base, **kwargs):
        self.opt = schedulefree.ScheduleFreeWrapper(base, **kwargs)
        self.opt.train()
        self.momentum = self.opt.momentum

    def __getattr__(self, name):
        return getattr(self.opt, name)


def sf_wrapper_case(name, lr, desc, base, base_kwargs, steplab_base, b1=0.9, wd=0.0, r=0.0,
                    weight_lr_power=2.0, seed=9):
    ref_base = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "prodigy": prodigyopt.Prodigy}[base]

    def build(params, lr0):
        return _Wrapped(ref_base(params, lr=lr0, **_ref_kwargs(base_kwargs)), weight_decay_at_y=wd,
                        momentum=b1, r=r, weight_lr_power=weight_lr_power)

    return Case(
        name, "schedule_free", "schedule_free",
        dict(base=steplab_base, b1=b1, weight_decay=wd, r=r, weight_lr_power=weight_lr_power),
        f"schedulefree.ScheduleFreeWrapper({ref_base.__module__}.{ref_base.__name__})",
        dict(base_kwargs=base_kwargs, weight_decay_at_y=wd, momentum=b1, r=r, weight_lr_power=weight_lr_power),
        lr, desc, seed=seed, require=lambda c: [("weights moved", c.get("steps_with_weight", 0) > 0)],
        build=build, eval_params=_sf_eval, scalars=_sf_scalars)


def adam_mini_case(name, lr, desc, kv_heads=TF_HEADS, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, seed=9):
    def build(named, lr0):
        return adam_mini_ref.Adam_mini(named, lr=lr0, betas=(b1, b2), eps=eps, weight_decay=wd, dim=TF_DIM,
                                       n_heads=TF_HEADS, n_kv_heads=kv_heads, verbose=False)

    return Case(
        name, "adam_mini", "adam_mini",
        dict(b1=b1, b2=b2, eps=eps, weight_decay=wd, num_heads=TF_HEADS, num_kv_heads=kv_heads),
        "adam_mini.Adam_mini", dict(betas=[b1, b2], eps=eps, weight_decay=wd, dim=TF_DIM, n_heads=TF_HEADS,
                                    n_kv_heads=kv_heads),
        lr, desc, problem="transformer_gqa" if kv_heads < TF_HEADS else "transformer", seed=seed,
        build=build, named=True)


def lion_case(name, lr, desc, b1=0.9, b2=0.99, wd=0.0, seed=10):
    """lion_pytorch.Lion: decoupled weight decay scaled by lr (its default)."""
    return Case(name, "lion", "lion", dict(b1=b1, b2=b2, weight_decay=wd), "lion_pytorch.Lion",
                dict(betas=[b1, b2], weight_decay=wd), lr, desc, seed=seed,
                require=lambda c: [("sign margin", c["sign_min_rel_margin"] > MIN_SIGN_MARGIN)])


CASES = [
    lion_case("lion_const", constant(1e-2), "Lion, constant lr, no weight decay."),
    lion_case("lion_sched_wd", warmup_cosine(2e-2), "Lion, warmup+cosine lr, betas (0.95, 0.98), decoupled"
              " weight decay 0.5 (scaled by lr).", b1=0.95, b2=0.98, wd=0.5, seed=11),
    adam_mini_case("adam_mini_default", constant(1e-2), "Adam-mini on a named one-layer Transformer, MHA."),
    adam_mini_case("adam_mini_gqa_wd_sched", warmup_cosine(2e-2),
                   "Adam-mini, grouped-query attention (1 kv head), weight decay 0.1 (not on norms/biases),"
                   " warmup+cosine lr, betas (0.8, 0.99), eps 1e-6.",
                   kv_heads=1, b1=0.8, b2=0.99, eps=1e-6, wd=0.1),
    radam_case("radam_const", constant(1e-2), "RAdam, constant lr, no weight decay."),
    radam_case("radam_sched_dwd", warmup_cosine(2e-2), "RAdam, warmup+cosine lr, decoupled weight decay 0.5.",
               wd=0.5, decoupled=True),
    radam_case("radam_coupled_wd", constant(1e-2), "RAdam, constant lr, coupled (L2) weight decay 0.1.",
               wd=0.1, decoupled=False),
    radam_case("radam_betas_eps", constant(1e-2), "RAdam, betas (0.8, 0.99) and a large eps 1e-3 (pins eps placement).",
               b1=0.8, b2=0.99, eps=1e-3),
    radam_case("radam_original_no_sgd_wd", warmup_cosine(2e-2),
               "Original RAdam (pytorch_optimizer port, degenerated_to_sgd=False), warmup+cosine lr, decoupled "
               "weight decay 0.25: steps 1-5 move nothing (no step, no decay), m and v still update.",
               wd=0.25, decoupled=True, original=True),
    adabound_case("adabound_const", constant(1e-2), "AdaBound, constant lr, default gamma and final_lr 0.1."),
    adabound_case("adabound_sched_wd", warmup_cosine(1e-2),
                  "AdaBound, warmup+cosine lr (bounds scale with lr_t/lr_0), coupled L2 weight decay 0.05.", wd=0.05),
    adabound_case("adabound_clip", constant(1e-2),
                  "AdaBound, gamma 0.1 and final_lr 0.02 so both the lower and the upper clip bind.",
                  final_lr=0.02, gamma=0.1, both=True),
    adabound_case("amsbound_const", constant(1e-2), "AMSBound, constant lr, default gamma.", ams=True),
    adabound_case("amsbound_sched", warmup_cosine(1e-2),
                  "AMSBound, warmup+cosine lr, gamma 0.05, final_lr 0.03, coupled weight decay 0.02.",
                  ams=True, gamma=0.05, final_lr=0.03, wd=0.02, both=True),
    adamod_case("adamod_const", constant(1e-2), "AdaMod, constant lr, default b3 0.999."),
    adamod_case("adamod_sched_wd", warmup_cosine(2e-2), "AdaMod, warmup+cosine lr, decoupled weight decay 0.5.",
                wd=0.5),
    adamod_case("adamod_small_b3", constant(1e-2), "AdaMod, small b3 0.9 so the momental bound binds and releases.",
                b3=0.9, both=True),
    adamp_case("adamp_default", constant(1e-2), "AdamP, default hyper-parameters, constant lr."),
    adamp_case("adamp_wd_nesterov", constant(1e-2), "AdamP, nesterov, weight decay 0.5 (wd_ratio on projected tensors).",
               wd=0.5, nesterov=True),
    adamp_case("adamp_sched", warmup_cosine(2e-2), "AdamP, warmup+cosine lr, weight decay 0.1, delta 0.2, wd_ratio 0.3.",
               wd=0.1, delta=0.2, wd_ratio=0.3),
    sgdp_case("sgdp_momentum_wd", constant(1e-2),
              "SGDP, momentum 0.9 without nesterov, weight decay 0.05 (projection modifies the momentum buffer in place).",
              momentum=0.9, wd=0.05, need_buf=True),
    sgdp_case("sgdp_nesterov", constant(1e-2), "SGDP, momentum 0.9 with nesterov, weight decay 0.02.",
              momentum=0.9, nesterov=True, wd=0.02),
    sgdp_case("sgdp_dampening", warmup_cosine(3e-2), "SGDP, momentum 0.5, dampening 0.1, warmup+cosine lr.",
              momentum=0.5, dampening=0.1),
    dog_case("dog_default", constant(1.0), "DoG, reference defaults (lr 1, reps_rel 1e-6, eps 1e-8)."),
    dog_case("dog_init_eta", constant(1.0),
             "DoG with init_eta 1e-3 (first step size given, reps_rel then 0); all-zero gradients at steps 20-21.",
             init_eta=1e-3, zero_grad_steps=(20, 21)),
    dog_case("dog_wd_reps", constant(0.8),
             "DoG, lr 0.8, reps_rel 1e-4, eps 1e-6, coupled weight decay 0.05 (added to the gradient).",
             reps_rel=1e-4, eps=1e-6, wd=0.05),
    dog_case("ldog_default", constant(1.0), "LDoG (per-tensor DoG), reference defaults.", layerwise=True),
    dog_case("ldog_sched", warmup_cosine(1.0), "LDoG with a warmup+cosine multiplier on lr, reps_rel 1e-3.",
             layerwise=True, reps_rel=1e-3),
    dog_case("dog_averaged", constant(1.0), "DoG + PolynomialDecayAverager(gamma=8); averaged iterate stored.",
             gamma=8.0),
    dog_case("ldog_averaged", constant(1.0), "LDoG + PolynomialDecayAverager(gamma=2); averaged iterate stored.",
             layerwise=True, gamma=2.0),
    prodigy_case("prodigy_default", constant(1.0), "Prodigy, reference defaults (lr 1, d0 1e-6, b3 = sqrt(b2))."),
    prodigy_case("prodigy_bias_correction", constant(1.0), "Prodigy with Adam's bias correction.",
                 bias_correction=True),
    prodigy_case("prodigy_safeguard_sched", warmup_cosine(1.0),
                 "Prodigy, safeguard_warmup under a warmup+cosine lr, b3 0.99.", safeguard=True, b3=0.99),
    prodigy_case("prodigy_growth", constant(1.0), "Prodigy, growth_rate 1.05 (binds), d_coef 0.8, d0 1e-4.",
                 growth_rate=1.05, d_coef=0.8, d0=1e-4, need=("growth_rate_bound",)),
    prodigy_case("prodigy_coupled_wd", constant(1.0), "Prodigy, coupled (L2) weight decay 0.1.",
                 wd=0.1, decouple=False),
    prodigy_case("prodigy_decoupled_wd", constant(0.5), "Prodigy, lr 0.5, decoupled weight decay 0.5.", wd=0.5),
    prodigy_case("prodigy_b1_zero", constant(1.0), "Prodigy without momentum (b1 = 0): step uses g and the new d.",
                 b1=0.0),
    prodigy_case("prodigy_slice", constant(1.0), "Prodigy, slice_p 3 on rank-1 leaves (layout-free slicing).",
                 slice_p=3, problem="flat"),
    prodigy_case("prodigy_zero_grads", constant(1.0),
                 "Prodigy with all-zero gradients at steps 0-2 (D = 0: no step, k frozen) and 25 (a step on m).",
                 zero_grad_steps=(0, 1, 2, 25), need=("no_step_zero_D",)),
    sf_case("sf_sgd_default", constant(0.2), "Schedule-Free SGD, lr 0.2, momentum 0.9.", "sgd"),
    sf_case("sf_sgd_warmup_wd", constant(0.3), "Schedule-Free SGD, warmup 10 steps, weight decay 0.05, b1 0.8.",
            "sgd", b1=0.8, weight_decay=0.05, warmup_steps=10),
    sf_case("sf_adamw_default", constant(0.01),
            "Schedule-Free AdamW, lr 0.01, reference defaults otherwise; all-zero gradients at steps 5-6.",
            "adamw", zero_grad_steps=(5, 6)),
    sf_case("sf_adamw_all", warmup_cosine(0.02),
            "Schedule-Free AdamW under a warmup+cosine lr, warmup_steps 8, wd 0.1, r 0.5, weight_lr_power 1, b2 0.99.",
            "adamw", b2=0.99, weight_decay=0.1, warmup_steps=8, r=0.5, weight_lr_power=1.0),
    sf_case("sf_radam_default", constant(0.01),
            "Schedule-Free RAdam (silent phase until rho_t > 4, then rectified), wd 0.02.", "radam",
            weight_decay=0.02),
    sf_case("sf_radam_sgd_phase", constant(0.01), "Schedule-Free RAdam, silent_sgd_phase off (SGD steps first).",
            "radam", silent_sgd_phase=False),
    sf_wrapper_case("sf_wrap_sgd", constant(0.1), "ScheduleFreeWrapper(SGD), weight decay at y 0.05, r 1.",
                    "sgd", {}, "sgd", wd=0.05, r=1.0),
    sf_wrapper_case("sf_wrap_adagrad", constant(0.1), "ScheduleFreeWrapper(Adagrad eps 0), b1 0.85.",
                    "adagrad", {"eps": 0.0}, "adagrad", b1=0.85),
    sf_wrapper_case("sf_wrap_prodigy", constant(1.0),
                    "ScheduleFreeWrapper(Prodigy): weights use lr * d (d after the base step).",
                    "prodigy", {}, "prodigy"),
]


# ---------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------

def run_case(case: Case, dtype_name: str, T: int, vers: dict):
    dtype = DTYPES[dtype_name]
    prev_default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # any tensor the references create implicitly follows the run dtype
    try:
        problem = Problem(case.problem, dtype, case.seed)
        params = {n: problem.init[n].clone().requires_grad_(True) for n, _ in problem.specs}
        names = {id(p): n for n, p in params.items()}
        lrs = [float(v) for v in case.schedule(T)]
        assert len(lrs) == T and all(v > 0 for v in lrs)
        if case.build is not None:
            opt = case.build(list(params.items()) if case.named else list(params.values()), lrs[0])
        else:
            opt = reference_class(case.reference)(list(params.values()), lr=lrs[0],
                                             **_ref_kwargs(case.reference_kwargs))
        rec = Recorder()
        if case.family in ("adamp", "sgdp"):
            rec.wrap_projection(opt, names, sgdp=case.family == "sgdp")

        p_hist = {n: [p.detach().clone()] for n, p in params.items()}
        x_hist = {n: [p.detach().clone()] for n, p in params.items()}
        g_hist = {n: [] for n in params}
        s_hist = {}
        for t in range(T):
            opt.zero_grad(set_to_none=True)
            loss = problem.loss(params)
            assert torch.isfinite(loss), (case.name, t)
            loss.backward()
            if t in case.zero_grad_steps:
                for p in params.values():
                    p.grad.zero_()
            grads = {n: p.grad.detach().clone() for n, p in params.items()}
            for g in opt.param_groups:
                g["lr"] = lrs[t]
            rec.before_step(case.family, opt, names)
            if case.step is not None:
                case.step(opt)
            else:
                opt.step()
            rec.after_step(case.family, opt, names)
            if case.eval_params is not None:
                for n, x in case.eval_params(opt, params).items():
                    x_hist[n].append(x.detach().clone())
            if case.scalars is not None:
                for k, v in case.scalars(opt).items():
                    s_hist.setdefault(k, []).append(float(v))
            for n, p in params.items():
                assert case.mutates_grad or torch.equal(p.grad, grads[n]), "reference mutated p.grad"
                assert p.dtype == dtype and p.grad.dtype == dtype
                g_hist[n].append(grads[n])
                p_hist[n].append(p.detach().clone())
        for st in opt.state.values():
            for v in st.values():
                if torch.is_tensor(v) and v.is_floating_point() and v.ndim > 0:
                    assert v.dtype == dtype, (case.name, v.dtype)
    finally:
        torch.set_default_dtype(prev_default)

    cov = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in sorted(rec.cov.items()) if not k.startswith("_")}
    failed = [what for what, ok in case.require(rec.cov) if not ok]
    assert not failed, f"{case.name}_{dtype_name}: required coverage not hit: {failed}; coverage={cov}"

    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    arrays = {"lr": np.asarray(lrs, dtype=np.float64)}
    torch_shapes = {}
    stored_names = []
    for n, _ in problem.specs:
        r = params[n].ndim
        if problem.kind.startswith("transformer"):  # Flax names and layouts (kernel, embedding, scale).
            f, transpose = flax_name(n, r)
            r = r if transpose else 1
        else:
            f = n
        stored_names.append(f)
        torch_shapes[f] = list(params[n].shape)
        arrays[f"p/{f}"] = to_flax(torch.stack(p_hist[n]).numpy(), r).astype(np_dtype, copy=False)
        arrays[f"g/{f}"] = to_flax(torch.stack(g_hist[n]).numpy(), r).astype(np_dtype, copy=False)
        assert arrays[f"p/{f}"].dtype == np_dtype and arrays[f"p/{f}"].shape[0] == T + 1
        assert np.all(np.isfinite(arrays[f"p/{f}"])) and np.all(np.isfinite(arrays[f"g/{f}"]))
        if case.eval_params is not None:
            assert len(x_hist[n]) == T + 1, (case.name, n, len(x_hist[n]))
            arrays[f"x/{f}"] = to_flax(torch.stack(x_hist[n]).numpy(), r).astype(np_dtype, copy=False)
    for k, v in s_hist.items():
        assert len(v) == T, (case.name, k, len(v))
        arrays[f"s/{k}"] = np.asarray(v, dtype=np.float64)
    meta = {
        "case": case.name,
        "optimizer": case.optimizer,
        "kwargs": case.kwargs,
        "reference": case.reference,
        "reference_kwargs": {"lr": lrs[0], **case.reference_kwargs},
        "versions": vers,
        "dtype": dtype_name,
        "num_steps": T,
        "param_names": stored_names,
        "eval_params": case.eval_params is not None,
        "averaging_gamma": case.averaging_gamma,
        "scalars": sorted(s_hist),
        "torch_shapes": torch_shapes,
        "coverage": cov,
        "description": case.description,
    }
    if case.family == "adam_mini":
        # The reference's own partition: second-moment entries per parameter
        # (vmean for blocks, v for its Adam blocks), under the stored names.
        by_id = {id(p): f for (n, p), f in zip(params.items(), stored_names)}
        meta["reference_blocks"] = {
            by_id[id(p)]: int((st["vmean"] if "vmean" in st else st["v"]).numel())
            for p, st in opt.state.items()
        }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=False))
    return arrays, cov


def _ref_kwargs(kw: dict) -> dict:
    out = dict(kw)
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    return out


def summarize(cov: dict) -> str:
    views = {}
    for k, v in cov.items():
        if k.startswith("view["):
            name, hit = k[5:].split("]=")
            views.setdefault(name, []).append(f"{hit}:{v}")
    parts = [f"{k}={v}" for k, v in cov.items() if not k.startswith("view[")]
    if views:
        parts.append("views{" + ", ".join(f"{n}:{'/'.join(h)}" for n, h in views.items()) + "}")
    return " ".join(parts)


def selected(name: str, only: str | None) -> bool:
    if not only:
        return True
    for pat in only.split(","):
        pat = pat.strip()
        if any(ch in pat for ch in "*?["):
            if fnmatch.fnmatch(name, pat):
                return True
        elif pat in name:
            return True
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--only", default=None,
                    help="comma-separated case-name filters: substrings, or globs if they contain *?[")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    check_deprecated_overloads()
    vers = versions()

    cases = [c for c in CASES if selected(c.name, args.only)]
    if not cases:
        print(f"no case matches --only {args.only!r}; cases: {[c.name for c in CASES]}", file=sys.stderr)
        return 2
    assert len({c.name for c in CASES}) == len(CASES)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    total = 0
    for case in cases:
        for dtype_name in case.dtypes:
            arrays, cov = run_case(case, dtype_name, NUM_STEPS, vers)
            path = args.out / f"{case.name}_{dtype_name}.npz"
            np.savez_compressed(path, **arrays)
            size = path.stat().st_size
            total += size
            print(f"{path.name}: {case.optimizer} T={NUM_STEPS} {size / 1024:.0f} KiB | {summarize(cov)}", flush=True)
    print(f"{sum(len(c.dtypes) for c in cases)} files, {total / 1024:.0f} KiB, {time.time() - t0:.1f} s "
          f"({', '.join(f'{dist} {vers[dist]}' for dist in PINS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

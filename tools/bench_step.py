#!/usr/bin/env python3
"""Benchmark one jitted optimizer step of every registry optimizer.

What it measures
----------------
For a parameter tree shaped like a small Transformer (token embedding, then
per layer q/k/v/o kernels (d, d), MLP kernels (d, 4d) and (4d, d), their
biases and two layer norms; about `--num_params` parameters in ~130 leaves)
and fixed random gradients, it times

    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)

as ONE jitted function that donates params and state (so XLA may update them
in place), called repeatedly with its outputs fed back. Each optimizer is built
with `registry[name].build()` (the reference defaults). Measurements are
interleaved against drift: every round times each optimizer (and a copy
kernel) for `--steps_per_round` steps, in a new random order; a row with an
optax counterpart is timed together with it, their steps alternating. A
round's time is the median of its steps, and every reported figure is the
median over rounds.

How to run
----------
    python tools/bench_step.py                          # ~10M params, all optimizers
    python tools/bench_step.py --optimizers=adamw,radam --rounds=11
    python tools/bench_step.py --num_params=1e8         # on an accelerator
    python tools/bench_step.py --dtype=bfloat16 --csv=/tmp/step.csv

Progress goes to stderr (one line per round); the table (markdown) to stdout.

How to read it
--------------
* `ms/step`: median time of one step.
* `x adamw`: step time over `optax.adamw`'s, in the same round, median over
  rounds, with the min-max across rounds in brackets: the bracket is the noise.
* `x optax`: step time over optax's own version of the same algorithm
  (`OPTAX_COUNTERPARTS`, e.g. `optax.radam` for radam), PAIRED: the two steps
  alternate, and each ratio is of neighbouring steps (median per round, then
  over rounds); `self` where the registry entry IS optax's function; blank
  where optax has none. Counterparts appear as their own rows,
  `<name> (optax)`. `x adamw` is not paired (one baseline for every row), so
  it resolves less: ~10% on a shared 2-core machine, against a few percent
  for `x optax`; with `--pair_baseline` the rows without a counterpart are
  timed beside the baseline too and their `x adamw` (marked `p`) is paired.
  The row `adamw (again)` is optax.adamw compiled a second time and paired
  with the baseline: its `x optax` is what the table reads
  for two IDENTICAL programs (their buffers differ), the instrument's own
  bias and noise, against which every other `x optax` is to be read.
* `bytes x optax`, `HLO B/p`: XLA's own estimate of the bytes the compiled
  step accesses (`cost_analysis()["bytes accessed"]`), over the counterpart's
  and per parameter. Deterministic for a given jax/XLA and machine: where the
  two steps compile to the same traffic (1.000) a timed difference is the
  clock's, or compute, not memory. It counts every branch of a conditional
  (DoG's overflow-safe norm, AdamP's projection), so for steps with one it is
  an upper bound, not the traffic of the branch taken.
* `state B/p`: optimizer-state bytes per parameter, measured from `opt.init`
  (for float32 it must equal `OptimizerSpec.state_bytes_per_param`, checked).
* `temp B/p`: XLA's temporary buffers of the compiled step per parameter
  (`memory_analysis().temp_size_in_bytes`; deterministic). 4.0 is one
  float32 tree written out and read back: a copy XLA inserted (a moment the
  step reads and overwrites: Lion, schedule-free) or a value shared by two
  consumers; a conditional's branch counts whether or not it runs.

The floor model
---------------
An element-wise optimizer step must at least read params, grads and state and
write params and state: (3 P + 2 S) bytes per parameter, with P the parameter
itemsize (4 for float32: 4 + 4 + S + 4 + S) and S the state bytes per
parameter. `floor ms` is that traffic divided by the copy bandwidth measured in
the same run (a donated, jitted `x * 1.0000001` on a float32 array of
4 x num_params elements, so that it moves about as many bytes as an AdamW step
and does not fit in cache; bandwidth = bytes read + written / time).
`step / floor` near 1 means the step is memory-bound and fused well; much
above 1 means extra passes over memory (unfused reductions, recomputation,
layout copies) or compute-bound math. By default XLA:CPU writes each output
array in a loop of its own (optax.adamw: 40 compiled B/p for a floor of 28);
docs/benchmarks.md measures the experimental option that merges them
(`XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion`).
"""

from __future__ import annotations

import csv
import functools
import math
import random
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

from optimizers import registry
from optimizers.muon import muon_partition

# Optax's own version of a registry algorithm, built with the same learning
# rate as the registry defaults. "adamw" is also the baseline of every ratio.
# Add rows here as optax gains counterparts, e.g.
OPTAX_COUNTERPARTS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "adamw": lambda: optax.adamw(1e-3),
    "nadamw": lambda: optax.nadamw(1e-3),
    "radam": lambda: optax.radam(1e-3),
    "dog": lambda: optax.contrib.dog(1.0),
    "prodigy": lambda: optax.contrib.prodigy(1.0),
    "schedule_free_adamw": lambda: optax.contrib.schedule_free_adamw(0.0025),
    "schedule_free_sgd": lambda: optax.contrib.schedule_free_sgd(1.0),
    "sgd_momentum": lambda: optax.sgd(0.1, momentum=0.9),
    "sgd_nesterov": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "lion": lambda: optax.lion(1e-4, weight_decay=0.0),  # The registry's (reference) defaults.
    # The registry's defaults and steplab's partition (optax's own sends every 2-D leaf, the
    # embedding included, to Muon); optax's fallback is NAdam where steplab's is Adam.
    "muon": lambda: optax.contrib.muon(
        0.02, beta=0.95, adam_b1=0.9, adam_b2=0.95, adam_learning_rate=0.02 * 0.015,
        muon_weight_dimension_numbers=muon_partition),
}
BASELINE = "adamw"

_NUM_PARAMS = flags.DEFINE_float(
    "num_params", 10_000_000, "Approximate parameter count (1e8 accepted)."
)
_OPTIMIZERS = flags.DEFINE_list(
    "optimizers", None, "Registry names to time (default: all)."
)
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved measurement rounds.")
_STEPS = flags.DEFINE_integer(
    "steps_per_round", 9, "Timed steps per optimizer per round."
)
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16"], "Parameter/gradient dtype."
)
_CSV = flags.DEFINE_string("csv", None, "Also write the table to this CSV path.")
_PAIR_BASELINE = flags.DEFINE_bool(
    "pair_baseline", False,
    "Also time every row that has no optax counterpart beside the baseline (optax.adamw), so its"
    " `x adamw` is paired too (resolves a few percent instead of ~10%; the run takes longer).")


@flags.validator("optimizers")
def _known_optimizers(names):
  unknown = [n for n in names or () if n not in registry]
  if unknown:
    raise flags.ValidationError(
        f"unknown optimizer(s) {', '.join(unknown)}; valid: {', '.join(registry)}")
  return True


_NUM_LAYERS = 8
_HEAD_DIM = 32  # The model width is a multiple of 32.
_COPY = "copy kernel"


def transformer_shapes(num_params: int) -> dict[str, Any]:
  """A nested dict of shapes: 8 Transformer layers, vocab sized to fill."""
  L = _NUM_LAYERS
  # 12 d^2 per layer plus an embedding of ~32 d^2; d a multiple of 32.
  d = max(32, 32 * round(math.sqrt(num_params / (12 * L + 32)) / 32))
  per_layer = 12 * d * d + 13 * d
  vocab = max(1, round((num_params - L * per_layer - 2 * d) / d))
  dense = lambda i, o: {"kernel": (i, o), "bias": (o,)}
  norm = {"scale": (d,), "bias": (d,)}
  tree = {"embed": {"embedding": (vocab, d)}}
  for i in range(L):
    tree[f"layer_{i:02d}"] = {
        "attention": {k: dense(d, d) for k in ("query", "key", "value", "out")},
        "mlp": {"fc1": dense(d, 4 * d), "fc2": dense(4 * d, d)},
        "ln_attention": dict(norm),
        "ln_mlp": dict(norm),
    }
  tree["ln_final"] = dict(norm)
  return tree


def random_tree(shapes, dtype, scale: float, seed: int):
  is_shape = lambda x: isinstance(x, tuple)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([
      (scale * jax.random.normal(k, s, jnp.float32)).astype(dtype)
      for k, s in zip(keys, leaves)
  ])


def tree_bytes(tree) -> int:
  return sum(x.nbytes for x in jax.tree.leaves(tree))


class Case:
  """One timed jitted function with its live (donated) buffers."""

  def __init__(self, label, opt, params, grads, spec=None, counterpart=None):
    self.label, self.spec, self.counterpart = label, spec, counterpart
    self.params = jax.tree.map(jnp.copy, params)  # own buffers: they are donated
    # Copied because optax.contrib's dog, prodigy and schedule-free inits
    # return the params arrays themselves as state (x_0, z), which cannot be
    # donated twice; steplab's own inits copy (tests/invariants_test.py).
    self.state = jax.tree.map(jnp.copy, opt.init(self.params))
    self.state_bytes = tree_bytes(self.state) / _count(params)
    self.grads = grads

    # A fixed loss for optimizers that take it (induced_metric_log).
    extra = dict(value=jnp.float32(1.0)) if spec is not None and spec.needs_value else {}

    def step(params, state, grads):
      updates, state = opt.update(grads, state, params, **extra)
      return optax.apply_updates(params, updates), state

    # Compiled once, here: the executable that is timed is the one whose
    # cost XLA reports (bytes accessed: a deterministic column beside the clock).
    self.step = jax.jit(step, donate_argnums=(0, 1)).lower(
        self.params, self.state, self.grads).compile()
    self.hlo_bytes = compiled_bytes(self.step)
    self.temp_bytes = compiled_temp_bytes(self.step)

  def run(self):
    self.params, self.state = self.step(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, self.state))


def compiled_bytes(compiled) -> float:
  """XLA's 'bytes accessed' estimate of a compiled function (nan if unreported)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # A list on older jax.
  return float((cost or {}).get("bytes accessed", math.nan))


def compiled_temp_bytes(compiled) -> float:
  """XLA's temporary-buffer bytes of a compiled function (nan if unreported)."""
  analysis = compiled.memory_analysis()
  return float(getattr(analysis, "temp_size_in_bytes", math.nan)) if analysis is not None else math.nan


class CopyCase:
  """x * 1.0000001 in place: the streaming bandwidth for the floor."""

  label = _COPY

  def __init__(self, num_elements):
    self.x = jnp.ones((num_elements,), jnp.float32)
    self.bytes_moved = 2 * self.x.nbytes  # read + write
    self.step = jax.jit(lambda x: x * 1.0000001, donate_argnums=0)

  def run(self):
    self.x = jax.block_until_ready(self.step(self.x))


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _is_optax_own(spec) -> bool:
  """Whether the registry entry is an optax function (e.g. optax.nadamw, a partial)."""
  factory = spec.factory
  while isinstance(factory, functools.partial):
    factory = factory.func
  return factory.__module__.partition(".")[0] == "optax"


def build_cases(names, params, grads) -> tuple[list[Case], str]:
  """Registry rows, then the optax counterparts that are not the row itself.

  Returns the cases and the label of the baseline (optax.adamw): the registry
  row when that is optax's own, else an extra row.
  """
  cases, extra = [], []
  # Attention heads of 32 dimensions, for optimizers that partition by head (Adam-mini refuses
  # a query/key kernel without them).
  num_heads = params["layer_00"]["attention"]["query"]["kernel"].shape[0] // _HEAD_DIM
  for name in names:
    spec = registry[name]
    own = name in OPTAX_COUNTERPARTS and _is_optax_own(spec)
    heads = {"num_heads": num_heads} if "num_heads" in spec.arguments else {}
    cases.append(Case(name, spec.build(**heads), params, grads, spec,
                      counterpart=name if own else None))
    if name in OPTAX_COUNTERPARTS and not own:
      cases[-1].counterpart = label = f"{name} (optax)"
      extra.append(Case(label, OPTAX_COUNTERPARTS[name](), params, grads))
  baseline = next((c.counterpart for c in cases if c.label == BASELINE), None)
  if baseline is None:
    baseline = f"{BASELINE} (optax)"
    extra.insert(0, Case(baseline, OPTAX_COUNTERPARTS[BASELINE](), params, grads))
  # The instrument's own reading: the baseline's step compiled a second time,
  # with its own buffers, paired with the baseline. Its `x optax` is what the
  # table shows for two identical programs.
  extra.append(Case(f"{BASELINE} (again)", OPTAX_COUNTERPARTS[BASELINE](), params, grads, counterpart=baseline))
  return cases + extra, baseline


def check_state_bytes(cases, dtype):
  """At float32 the measured state must match the registry's metadata."""
  if dtype != jnp.float32:
    return
  for c in cases:
    if c.spec and abs(c.state_bytes - c.spec.state_bytes_per_param) > 0.5:
      print(f"WARNING: {c.label}: state is {c.state_bytes:.2f} B/param, registry"
            f" says {c.spec.state_bytes_per_param}", file=sys.stderr)


def timing_units(cases, copy, baseline=None) -> list[tuple[Any, ...]]:
  """What a round times: a row with an optax counterpart together with it, the rest alone.

  With `baseline` (a label), each row left alone is timed beside the baseline
  instead: a unit (row, baseline, "baseline"), whose baseline time is not
  recorded (the baseline's own unit records it once a round).
  """
  by_label = {c.label: c for c in cases}
  partner = {}  # row -> its counterpart; a counterpart already taken leaves the row alone.
  for c in cases:
    if c.counterpart not in (None, c.label) and c.counterpart not in partner.values() and c.label not in partner.values():
      partner[c.label] = c.counterpart
  taken = set(partner.values())
  units = [(copy,)] + [(c, by_label[partner[c.label]]) if c.label in partner else (c,)
                       for c in cases if c.label not in taken]
  if baseline is None:
    return units
  return [u + (by_label[baseline], "baseline") if len(u) == 1 and u[0] is not copy and u[0].label != baseline
          else u for u in units]


def measure(cases, copy, rounds, steps, baseline=None):
  """Per-round medians {label: [seconds]} and paired ratios {"optax"|"baseline": {label: [...]}}.

  Every round times each unit (`timing_units`) in a new random order: a fixed
  or rotated order would time each row always just before or after the same
  others, so slowly drifting machine state (caches, frequency, other jobs)
  could bias a ratio. Each unit first runs one untimed step of each case
  (after other units the first step runs on cold caches); within a pair the
  two steps then alternate, ABBAABBA..., each round the other one first, so
  each step of a row has its counterpart's step beside it and neither always
  goes first; a round's paired ratio is the median of the `steps` ratios of
  neighbouring steps. That resolves a few percent where two separately timed
  rows, seconds apart, resolve ~10% on a shared machine.
  """
  units = timing_units(cases, copy, baseline)
  start = time.perf_counter()
  for unit in units:  # warm up (compiled already)
    for c in unit[:2]:
      for _ in range(2):
        c.run()
  print(f"warmed up in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
  times = {c.label: [] for unit in units for c in unit[:2]}
  paired = {"optax": {}, "baseline": {}}
  for r in range(rounds):
    order = list(units)
    random.Random(r).shuffle(order)  # Seeded: the same orders on every run.
    for unit in order:
      kind = unit[2] if len(unit) == 3 else "optax"
      unit = unit[:2]
      for c in unit:  # Untimed: the first step after other units runs on cold caches.
        c.run()
      samples = {c.label: [] for c in unit}
      opening = unit[::-1] if r % 2 else unit  # Neither of a pair always opens.
      for i in range(steps):
        for c in opening if i % 2 == 0 else opening[::-1]:
          t0 = time.perf_counter()
          c.run()
          samples[c.label].append(time.perf_counter() - t0)
      for c in unit if kind == "optax" else unit[:1]:
        times[c.label].append(statistics.median(samples[c.label]))
      if len(unit) == 2:  # (row, counterpart or baseline)
        a, b = (samples[c.label] for c in unit)
        paired[kind].setdefault(unit[0].label, []).append(statistics.median(x / y for x, y in zip(a, b)))
    print(f"round {r + 1}/{rounds}: copy {copy.bytes_moved / times[_COPY][-1] / 1e9:.1f} GB/s, "
          + ", ".join(f"{c.label} {1e3 * times[c.label][-1]:.1f}" for c in cases)
          + " ms", file=sys.stderr, flush=True)
  return times, paired


def _ratio(a, b) -> tuple[float, float, float]:
  """Median, min and max over rounds of a[i] / b[i]."""
  return _spread_of([x / y for x, y in zip(a, b)])


def _spread_of(r) -> tuple[float, float, float]:
  return statistics.median(r), min(r), max(r)


def results(cases, times, paired, copy, baseline, itemsize) -> list[dict[str, Any]]:
  """One record of numbers per case (ratios as (median, min, max))."""
  by_label = {c.label: c for c in cases}
  bandwidth = [copy.bytes_moved / t for t in times[_COPY]]
  records = []
  for c in cases:
    t = times[c.label]
    traffic = _count(c.params) * (3 * itemsize + 2 * c.state_bytes)
    floor = [traffic / b for b in bandwidth]  # per round: drift cancels
    records.append({
        "optimizer": c.label,
        "ms_per_step": 1e3 * statistics.median(t),
        "vs_adamw": (_spread_of(paired["baseline"][c.label]) if c.label in paired["baseline"]
                     else _ratio(t, times[baseline])),
        "vs_adamw_paired": c.label in paired["baseline"],
        # Paired where the row was timed beside its counterpart (timing_units).
        "vs_optax": _spread_of(paired["optax"][c.label]) if c.label in paired["optax"] else None,
        "self": c.counterpart == c.label,
        "hlo_bytes_per_param": c.hlo_bytes / _count(c.params),
        "hlo_bytes_vs_optax": (c.hlo_bytes / by_label[c.counterpart].hlo_bytes
                               if c.label in paired["optax"] else None),
        "state_bytes_per_param": c.state_bytes,
        "temp_bytes_per_param": c.temp_bytes / _count(c.params),
        "floor_ms": 1e3 * statistics.median(floor),
        "step_over_floor": _ratio(t, floor)[0],
    })
  return records


def _spread(r) -> str:
  return "{:.2f} [{:.2f}-{:.2f}]".format(*r)


def markdown(records) -> str:
  rows = [{
      "optimizer": r["optimizer"],
      "ms/step": f"{r['ms_per_step']:.2f}",
      "x adamw [min-max]": _spread(r["vs_adamw"]) + (" p" if r["vs_adamw_paired"] else ""),
      "x optax [min-max]": "self" if r["self"] else _spread(r["vs_optax"]) if r["vs_optax"] else "",
      "bytes x optax": f"{r['hlo_bytes_vs_optax']:.3f}" if r["hlo_bytes_vs_optax"] else "",
      "HLO B/p": f"{r['hlo_bytes_per_param']:.1f}",
      "state B/p": f"{r['state_bytes_per_param']:.1f}",
      "temp B/p": f"{r['temp_bytes_per_param']:.1f}",
      "floor ms": f"{r['floor_ms']:.2f}",
      "step / floor": f"{r['step_over_floor']:.2f}",
  } for r in records]
  cols = list(rows[0])
  width = {k: max(len(k), *(len(r[k]) for r in rows)) for k in cols}
  # First column left-aligned, numbers right-aligned (also in rendered markdown).
  align = lambda k, text: text.ljust(width[k]) if k == cols[0] else text.rjust(width[k])
  line = lambda cells: "| " + " | ".join(cells) + " |"
  rule = ["-" * width[k] if k == cols[0] else "-" * (width[k] - 1) + ":" for k in cols]
  return "\n".join([line(align(k, k) for k in cols), line(rule)]
                   + [line(align(k, r[k]) for k in cols) for r in rows])


def write_csv(path, records):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["optimizer", "ms_per_step", "vs_adamw", "vs_adamw_min",
                     "vs_adamw_max", "vs_optax", "vs_optax_min", "vs_optax_max",
                     "hlo_bytes_vs_optax", "hlo_bytes_per_param", "state_bytes_per_param", "temp_bytes_per_param",
                     "floor_ms", "step_over_floor"])
    for r in records:
      writer.writerow([r["optimizer"], r["ms_per_step"], *r["vs_adamw"],
                       *(r["vs_optax"] or ("", "", "")), r["hlo_bytes_vs_optax"] or "",
                       r["hlo_bytes_per_param"], r["state_bytes_per_param"], r["temp_bytes_per_param"],
                       r["floor_ms"], r["step_over_floor"]])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  names = _OPTIMIZERS.value or list(registry)
  dtype = jnp.dtype(_DTYPE.value)
  wall = time.perf_counter()

  shapes = transformer_shapes(int(_NUM_PARAMS.value))
  params = random_tree(shapes, dtype, 0.02, seed=0)
  grads = random_tree(shapes, dtype, 1e-3, seed=1)
  n = _count(params)
  print(f"{n:,} params; compiling the steps...", file=sys.stderr, flush=True)
  cases, baseline = build_cases(names, params, grads)
  check_state_bytes(cases, dtype)
  copy = CopyCase(4 * n)
  print(f"compiled {len(cases)} steps in {time.perf_counter() - wall:.0f} s", file=sys.stderr, flush=True)

  times, paired = measure(cases, copy, _ROUNDS.value, _STEPS.value, baseline if _PAIR_BASELINE.value else None)
  records = results(cases, times, paired, copy, baseline, dtype.itemsize)
  bw = sorted(copy.bytes_moved / t / 1e9 for t in times[_COPY])

  d = shapes["layer_00"]["mlp"]["fc1"]["kernel"][0]
  vocab = shapes["embed"]["embedding"][0]
  # Trailing double spaces: markdown line breaks when pasted into a note.
  print(f"jax {jax.__version__}, optax {optax.__version__}, backend"
        f" {jax.default_backend()}, device {jax.devices()[0].device_kind}  ")
  print(f"params: {n:,} {dtype.name} in {len(jax.tree.leaves(params))} leaves"
        f" ({_NUM_LAYERS} layers, d={d}, vocab={vocab})  ")
  print(f"copy bandwidth: {statistics.median(bw):.1f} GB/s [{bw[0]:.1f}-{bw[-1]:.1f}]"
        f" ({copy.bytes_moved / 1e6:.0f} MB moved per call)  ")
  print(f"baseline: {baseline}; {_ROUNDS.value} rounds x {_STEPS.value} steps;"
        " ratios are medians over rounds [min-max]")
  print()
  print(markdown(records))
  if _CSV.value:
    write_csv(_CSV.value, records)
  print(f"wall time {time.perf_counter() - wall:.0f} s", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)

"""Export a registry optimizer as an AlgoPerf submission folder.

    python -m experiments.export_submission --optimizer=radam --output_dir=submissions/radam
    python -m experiments.export_submission --all --output_dir=submissions   # one folder each

The folder runs in steplab's runner and, unchanged, in AlgoPerf's
(`submission_runner.py`), and can be proposed to mlcommons/submissions_algorithms
as it is:

* `submission.py`: AlgoPerf's five functions with AlgoPerf's exact
  signatures and `spec.*` annotations, each delegating to one adapter,
  `experiments.submission.registry_submission(NAME, batch_sizes=BATCH_SIZES)`.
  Nothing of the adapter is copied, so the file stays a page a reviewer can
  read and the training code stays the code steplab tests.
* `tuning_search_space.json`: the registry's search space (AlgoPerf's JSON
  form; `one_minus_<arg>` tunes `1 - <arg>`), plus `warmup_factor` fixed at
  the adapter's default for entries that train with AlgoPerf's warmup + cosine
  schedule (it changes nothing there, and says which schedule runs). Entries
  without that schedule (DoG, schedule-free) get no `warmup_factor`: setting
  one would switch a schedule on.
* `__init__.py` (AlgoPerf imports the submission as a module of a package),
  `README.md`, `requirements.txt`, `submission_info.yml` (the fields of
  submissions_algorithms' pull-request template).

The folder's name becomes a module name in AlgoPerf (`--submission_path` is
turned into a dotted import path), so it must be a Python identifier.
"""

from __future__ import annotations

import importlib.metadata
import json
import keyword
import os
import string
import subprocess
import textwrap
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging

from experiments import submission as submission_lib
import optimizers

# Global batch sizes of AlgoPerf's workloads, so the export also runs in
# AlgoPerf's own runner: the `get_batch_size` table of AlgoPerf's NAdamW
# baseline (mlcommons/algorithmic-efficiency,
# algorithms/baselines/external_tuning/jax_nadamw_full_budget.py), with
# 'finewebedu_lm' as in the baselines of mlcommons/submissions_algorithms
# (submissions/self_tuning/nadamw/submission.py). steplab's own workloads are
# not listed: the adapter gives them their default batch sizes.
ALGOPERF_BATCH_SIZES = {
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1024,
    "imagenet_resnet_silu": 512,
    "imagenet_resnet_gelu": 512,
    "imagenet_vit": 1024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "ogbg": 512,
    "wmt": 128,
    "finewebedu_lm": 64,
    "mnist": 16,
}
BATCH_SIZES_SOURCE = (
    "AlgoPerf's NAdamW baseline's get_batch_size table (mlcommons/algorithmic-efficiency,"
    " algorithms/baselines/external_tuning/jax_nadamw_full_budget.py; 'finewebedu_lm' from"
    " mlcommons/submissions_algorithms, submissions/self_tuning/nadamw/submission.py)"
)

# AlgoPerf's ruleset names (its `--tuning_ruleset` flag and steplab's), with
# the submissions_algorithms folder and `ruleset:` value of each.
RULESETS = {"external": ("external_tuning", "external"), "self": ("self_tuning", "self-tuning")}

FILES = ("__init__.py", "submission.py", "tuning_search_space.json", "README.md", "requirements.txt",
         "submission_info.yml")


def search_space(name: str) -> dict[str, Any]:
  """The exported search space of registry entry `name`.

  The registry's space, plus `warmup_factor` fixed at the adapter's default
  where the entry trains with AlgoPerf's warmup + cosine schedule, i.e. unless
  the method sets its own schedule (`registry_submission` puts that default in
  otherwise; listing it makes the schedule visible and matches AlgoPerf's
  baselines). Never for the others: a `warmup_factor` would switch a schedule
  on for them.
  """
  spec = optimizers.registry[name]
  space = {key: dict(value) for key, value in spec.search_space.items()}
  if not spec.sets_own_schedule:
    space.setdefault("warmup_factor", {"feasible_points": [submission_lib.REGISTRY_WARMUP_FACTOR]})
  return space


def steplab_version() -> str:
  """steplab's version and, in a git checkout, its commit: what a reviewer needs
  to rebuild the exact code a submission delegates to."""
  try:
    version = importlib.metadata.version("steplab")
  except importlib.metadata.PackageNotFoundError:
    version = "(not installed)"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if not os.path.exists(os.path.join(root, ".git")):
    return version
  try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True, timeout=30).stdout.strip()
    # --no-optional-locks: only read the repository, never refresh its index.
    changes = subprocess.run(
        ["git", "--no-optional-locks", "-C", root, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return version
  return f"{version} (commit {commit}{', with uncommitted changes' if changes else ''})"


def _steplab_dependencies() -> list[str]:
  """steplab's own requirements (for the README's compatibility note)."""
  try:
    requires = importlib.metadata.requires("steplab") or []
  except importlib.metadata.PackageNotFoundError:
    return []
  return [r for r in requires if "extra ==" not in r]


def _has_eval_rule(name: str) -> bool:
  """Whether the entry evaluates away from its training point (schedule-free's
  x, an averaged iterate), i.e. whether `prepare_for_eval` does anything."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  params = {"w": jnp.zeros((2,))}
  state = optimizers.registry[name].build().init(params)
  return optimizers.eval_params(state, params) is not params


def _schedule_text(name: str) -> str:
  spec = optimizers.registry[name]
  if not spec.sets_own_schedule:
    return (f"AlgoPerf's baseline schedule: linear warmup over warmup_factor ="
            f" {submission_lib.REGISTRY_WARMUP_FACTOR:g} of the workload's step_hint, then cosine"
            f" decay to zero at step_hint.")
  return (f"constant: {name} sets its own step size or replaces the schedule (a point that sets"
          f" warmup_factor or schedule switches one on).")


def _eval_text(name: str, subject: str = "prepare_for_eval") -> str:
  if _has_eval_rule(name):
    return (f"{subject} hands out the evaluation point (optimizers.eval_params: the x"
            " sequence for schedule-free, the average for averaging methods) and keeps the"
            " training parameters in the optimizer state; the next update_params trains on from"
            " them, since the runner continues from what prepare_for_eval returns.")
  return f"{subject} returns its arguments unchanged: {name} evaluates where it trains."


def _format_defaults(defaults: Mapping[str, Any]) -> str:
  return ", ".join(f"{key}={value!r}" for key, value in defaults.items())


_SUBMISSION_TEMPLATE = string.Template('''\
"""steplab's `${name}` as an AlgoPerf submission (JAX).

${optimizer}
${paper}
${reference}
Defaults (the reference's; the self-tuning ruleset trains at these, and
points of tuning_search_space.json override them under the external ruleset):
  ${defaults}
${schedule}
${evaluation}

Each function below has AlgoPerf's signature (algoperf/spec.py) and delegates
to one adapter, `experiments.submission.registry_submission`, which uses only
AlgoPerf's workload API (step_hint, model_fn in ForwardPassMode.TRAIN,
loss_fn) and understands AlgoPerf's hyperparameter names (beta1, beta2,
one_minus_beta1, label_smoothing, dropout_rate, grad_clip, warmup_factor).

Needs steplab installed (requirements.txt); see README.md.

${generated}
"""

from typing import Any, Dict, Iterator, List, Optional, Tuple

from algoperf import spec

from experiments import submission as steplab_submission

OPTIMIZER = ${name_literal}

${batch_sizes_comment}
BATCH_SIZES = {
${batch_sizes}}

_ADAPTER = steplab_submission.registry_submission(OPTIMIZER, batch_sizes=BATCH_SIZES)


def get_batch_size(workload_name: str) -> int:
  """The global batch size for `workload_name` (see BATCH_SIZES)."""
  return _ADAPTER.get_batch_size(workload_name)


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
  """Builds ${name} for this point (None: the defaults) and the jitted step.

  Returns (optimizer state, update function), as AlgoPerf's JAX submissions.
  """
  return _ADAPTER.init_optimizer_state(workload, model_params, model_state, hyperparameters, rng)


def update_params(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    batch: Dict[str, spec.Tensor],
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: List[Tuple[int, float]],
    global_step: int,
    rng: spec.RandomState,
    train_state: Optional[Dict[str, Any]] = None,
) -> spec.UpdateReturn:
  """One ${name} step on `batch`."""
  return _ADAPTER.update_params(
      workload, current_param_container, current_params_types, model_state, hyperparameters,
      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state)


def prepare_for_eval(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: List[Tuple[int, float]],
    global_step: int,
    rng: spec.RandomState,
) -> spec.UpdateReturn:
  """The parameters to evaluate.

  ${evaluation_indented}
  """
  return _ADAPTER.prepare_for_eval(
      workload, current_param_container, current_params_types, model_state, hyperparameters,
      loss_type, optimizer_state, eval_results, global_step, rng)


def data_selection(
    workload: spec.Workload,
    input_queue: Iterator[Dict[str, Any]],
    optimizer_state: spec.OptimizerState,
    current_param_container: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    global_step: int,
    rng: spec.RandomState,
) -> Dict[str, spec.Tensor]:
  """The next batch of the runner's pre-shuffled input queue."""
  return _ADAPTER.data_selection(
      workload, input_queue, optimizer_state, current_param_container, model_state,
      hyperparameters, global_step, rng)
''')


def _wrap(text: str, width: int = 76, indent: str = "") -> str:
  return textwrap.fill(text, width=width, subsequent_indent=indent, break_on_hyphens=False)


def _int_literal(value: int) -> str:
  """262_144, but 1024: underscores only where they help reading."""
  return f"{value:_}" if value >= 10_000 else str(value)


def render_submission(name: str, version: str) -> str:
  """The text of `submission.py` for registry entry `name`."""
  spec = optimizers.registry[name]
  evaluation = _eval_text(name)
  return _SUBMISSION_TEMPLATE.substitute(
      name=name,
      name_literal=json.dumps(name),
      optimizer=_wrap(f"Optimizer: `optimizers.{name}` of steplab, an Optax gradient transformation.",
                      indent="  "),
      paper=_wrap(f"Paper: {spec.paper}.", indent="  "),
      reference=_wrap(f"Reference implementation: {spec.reference} (steplab's tests pin its"
                      " trajectories).", indent="  "),
      defaults=_wrap(_format_defaults(spec.defaults), indent="  "),
      schedule=_wrap(f"Learning rate: {_schedule_text(name)}", indent="  "),
      evaluation=_wrap(f"Evaluation: {evaluation}", indent="  "),
      evaluation_indented=_wrap(_eval_text(name, subject="It"), indent="  "),
      generated=(_wrap(f"Generated from steplab {version} by") +
                 f"\n  python -m experiments.export_submission --optimizer={name}\nRegenerate it rather than"
                 " edit it."),
      batch_sizes_comment=textwrap.fill(
          f"Global batch size per AlgoPerf workload: {BATCH_SIZES_SOURCE}. steplab's workloads"
          " (mnist1d_mlp, logreg, ...) get their default batch sizes from the adapter; a name"
          " known to neither raises ValueError, and AlgoPerf's runner then asks again with the"
          " base workload's name.", width=78, initial_indent="# ", subsequent_indent="# ",
          break_on_hyphens=False),
      batch_sizes="".join(f"    {json.dumps(k)}: {_int_literal(v)},\n" for k, v in ALGOPERF_BATCH_SIZES.items()),
  )


def _space_rows(space: Mapping[str, Any]) -> str:
  rows = []
  for key, dim in space.items():
    if "feasible_points" in dim:
      values = ", ".join(json.dumps(v) for v in dim["feasible_points"])
      rows.append(f"| `{key}` | {'fixed at' if len(dim['feasible_points']) == 1 else 'one of'} {values} |")
    else:
      rows.append(f"| `{key}` | [{dim['min']:g}, {dim['max']:g}], {dim['scaling']} scale |")
  return "\n".join(rows)


def render_readme(name: str, folder: str, version: str, ruleset: str) -> str:
  """The text of the folder's README.md."""
  spec = optimizers.registry[name]
  subdir = RULESETS[ruleset][0]
  algoperf_dir = f"submissions/{subdir}/{folder}"
  dependencies = ", ".join(f"`{d}`" for d in _steplab_dependencies()) or "(steplab is not installed here)"
  return f"""# {name}: steplab's `optimizers.{name}` as an AlgoPerf submission (JAX)

- Paper: {spec.paper}
- Reference implementation: {spec.reference}
- Learning rate: {_schedule_text(name)}
- Evaluation: {_eval_text(name)}
- Generated by `python -m experiments.export_submission --optimizer={name}` from steplab {version}.

`submission.py` has AlgoPerf's five functions (`get_batch_size`, `init_optimizer_state`,
`update_params`, `prepare_for_eval`, `data_selection`) with AlgoPerf's signatures; each delegates
to `experiments.submission.registry_submission("{name}", batch_sizes=BATCH_SIZES)`, so it needs
steplab installed (`pip install -r requirements.txt`). Batch sizes: {BATCH_SIZES_SOURCE}; steplab's
own workloads use their default batch sizes.

## Rulesets

- **External tuning**: the runner draws points from `tuning_search_space.json` (Halton,
  quasi-random) and passes each as `hyperparameters`; a name `one_minus_<arg>` sets
  `<arg> = 1 - value`, AlgoPerf's `beta1`/`beta2`, `label_smoothing`, `dropout_rate` and
  `grad_clip` are understood too if you add them.

| hyperparameter | range |
|---|---|
{_space_rows(search_space(name))}

- **Self-tuning**: `hyperparameters` is None and it trains at the registry defaults,
  `{_format_defaults(spec.defaults)}`, with the schedule above. `tuning_search_space.json` is
  not used (AlgoPerf refuses a search space under self-tuning).

## Run it in steplab

From the directory that holds this folder, with steplab installed:

```bash
python -m experiments.run --workload=logreg --submission_path={folder}/submission.py \\
    --tuning_search_space={folder}/tuning_search_space.json             # external tuning
python -m experiments.run --workload=logreg --submission_path={folder}/submission.py \\
    --tuning_ruleset=self                                                # self-tuning
```

## Run it in AlgoPerf

Copy this folder into an AlgoPerf checkout (mlcommons/algorithmic-efficiency) as
`{algoperf_dir}/`, install steplab next to AlgoPerf, and run from the checkout's root
(the runner imports `--submission_path` as a module, so the path is relative to it):

```bash
pip install -r {algoperf_dir}/requirements.txt
python3 submission_runner.py --framework=jax --workload=mnist \\
    --submission_path={algoperf_dir}/submission.py \\
    --tuning_search_space={algoperf_dir}/tuning_search_space.json \\
    --tuning_ruleset=external --num_tuning_trials=5 \\
    --experiment_dir=$HOME/experiments --experiment_name={folder}
python3 submission_runner.py --framework=jax --workload=mnist \\
    --submission_path={algoperf_dir}/submission.py --tuning_ruleset=self \\
    --experiment_dir=$HOME/experiments --experiment_name={folder}_self
```

To propose it to the leaderboard, open a pull request to mlcommons/submissions_algorithms with
this folder under `submissions/{subdir}/` and the fields of `submission_info.yml` (fill in
`authors` and `affiliations`).

Compatibility: steplab requires {dependencies}. Check them against the versions your AlgoPerf
installation pins (its `pyproject.toml`, extras `jax_cpu`/`jax_gpu`) before a run.
"""


def render_requirements(name: str, version: str, requirement: str) -> str:
  comment = (f"steplab provides `optimizers.{name}` and the adapter submission.py delegates to;"
             f" exported from steplab {version}. If steplab is not on your package index, replace"
             f" the line below with where you install it from, e.g. `steplab @ git+<url>@<commit>`"
             f" (or pass --steplab_requirement to experiments.export_submission).")
  return textwrap.fill(comment, width=78, initial_indent="# ", subsequent_indent="# ") + f"\n{requirement}\n"


def render_submission_info(name: str, folder: str, ruleset: str, authors: str, affiliations: str) -> str:
  """submission_info.yml, with the fields of submissions_algorithms' template.

  Values are JSON strings, which YAML reads as double-quoted scalars.
  """
  spec = optimizers.registry[name]
  subdir, ruleset_name = RULESETS[ruleset]
  description = (f"steplab's {name} ({spec.paper}), exported by steplab's experiments.export_submission."
                 f" {_schedule_text(name)}")
  fields = (
      ("submission_name", f"steplab {name}", "As it will appear on the leaderboard"),
      ("submission_folder", f"submissions/{subdir}/{folder}", None),
      ("authors", authors, None if authors else "Fill in: authors, separated by commas"),
      ("affiliations", affiliations, None if affiliations else "Fill in: affiliations, separated by commas"),
      ("version", "1.0", None),
      ("ruleset", ruleset_name, "external or self-tuning"),
      ("framework", "JAX", None),
      ("description", description, None),
  )
  lines = []
  for key, value, comment in fields:
    lines.append(f"{key}: {json.dumps(value)}" + (f"  # {comment}" if comment else ""))
  return "\n".join(lines) + "\n"


def export(
    name: str,
    output_dir: str,
    *,
    overwrite: bool = False,
    ruleset: str = "external",
    authors: str = "",
    affiliations: str = "",
    steplab_requirement: str | None = None,
) -> list[str]:
  """Writes the submission folder of registry entry `name`; returns the paths.

  Raises:
    ValueError: an unknown optimizer or ruleset, a folder name that is not a
      Python identifier (AlgoPerf imports the folder as a module), or a
      non-empty `output_dir` without `overwrite`.
  """
  if name not in optimizers.registry:
    raise ValueError(f"unknown optimizer {name!r}; registered: {', '.join(sorted(optimizers.registry))}")
  if ruleset not in RULESETS:
    raise ValueError(f"unknown ruleset {ruleset!r}; one of {sorted(RULESETS)}")
  output_dir = os.path.abspath(output_dir)
  folder = os.path.basename(output_dir)
  if not folder.isidentifier() or keyword.iskeyword(folder):
    raise ValueError(
        f"the output folder's name {folder!r} is not a Python identifier: AlgoPerf imports"
        f" <folder>/submission.py as a module. Use e.g. {name!r}.")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"{output_dir} exists and is not a directory.")
  if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
    raise ValueError(f"{output_dir} is not empty: pass --overwrite to replace its files.")
  version = steplab_version()
  requirement = steplab_requirement or f"steplab=={version.split(' ')[0]}"
  contents = {
      "__init__.py": "",
      "submission.py": render_submission(name, version),
      "tuning_search_space.json": json.dumps(search_space(name), indent=2) + "\n",
      "README.md": render_readme(name, folder, version, ruleset),
      "requirements.txt": render_requirements(name, version, requirement),
      "submission_info.yml": render_submission_info(name, folder, ruleset, authors, affiliations),
  }
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for filename in FILES:
    path = os.path.join(output_dir, filename)
    with open(path, "w") as f:
      f.write(contents[filename])
    paths.append(path)
  return paths


def export_command(
    optimizer: str | None,
    output_dir: str | None,
    *,
    export_all: bool = False,
    overwrite: bool = False,
    ruleset: str = "external",
    authors: str = "",
    affiliations: str = "",
    steplab_requirement: str | None = None,
    out=print,
) -> list[str]:
  """What the command line does: checks the options, exports, prints the
  written files and the next command. Returns the submission folders.

  Raises:
    app.UsageError: missing or contradictory options, or what `export` refuses.
  """
  if not output_dir:
    raise app.UsageError("--output_dir is required.")
  if export_all == bool(optimizer):
    raise app.UsageError("pass exactly one of --optimizer=NAME and --all"
                         f" (registered: {', '.join(sorted(optimizers.registry))}).")
  if optimizer and optimizer not in optimizers.registry:
    raise app.UsageError(f"unknown --optimizer {optimizer!r}; registered: {', '.join(sorted(optimizers.registry))}")
  names = sorted(optimizers.registry) if export_all else [optimizer]
  targets = [(n, os.path.join(output_dir, n) if export_all else output_dir) for n in names]
  # Check every folder before writing any, so --all never stops half way.
  for name, folder in targets:
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
      raise app.UsageError(f"{folder} is not empty: pass --overwrite to replace its files.")
  folders = []
  for name, folder in targets:
    try:
      paths = export(name, folder, overwrite=overwrite, ruleset=ruleset, authors=authors,
                     affiliations=affiliations, steplab_requirement=steplab_requirement)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    out(f"{name}: wrote {', '.join(os.path.join(folder, os.path.basename(p)) for p in paths)}")
    folders.append(folder)
  example = folders[0]
  out("\nnext, run it in steplab's runner:\n"
      f"  python -m experiments.run --workload=logreg --submission_path={example}/submission.py"
      f" --tuning_search_space={example}/tuning_search_space.json\n"
      f"and in AlgoPerf's, see {example}/README.md.")
  return folders


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command line's flags.

  Only when run as a program: `experiments.run` and `experiments.score` define
  flags of the same names (`--optimizer`, `--overwrite`, `--output_dir`), and
  absl flags are process-global, so a module importing this one and the
  runner (the tests do) must not see them twice.
  """
  flags.DEFINE_string("optimizer", None, f"Registry optimizer: {', '.join(sorted(optimizers.registry))}.")
  flags.DEFINE_string("output_dir", None,
                      "The submission folder to write (its name must be a Python identifier); with"
                      " --all, the folder that gets one subfolder per optimizer.")
  flags.DEFINE_bool("all", False, "Export every registry optimizer into subfolders of --output_dir.")
  flags.DEFINE_bool("overwrite", False, "Replace the files of a non-empty --output_dir.")
  flags.DEFINE_enum("ruleset", "external", sorted(RULESETS),
                    "The ruleset submission_info.yml names (the folder works under both).")
  flags.DEFINE_string("authors", "", "submission_info.yml's authors.")
  flags.DEFINE_string("affiliations", "", "submission_info.yml's affiliations.")
  flags.DEFINE_string("steplab_requirement", None,
                      "requirements.txt's steplab line (default steplab==<this version>).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # JAX's backend probing logs at INFO.
  export_command(
      FLAGS.optimizer, FLAGS.output_dir, export_all=FLAGS.all, overwrite=FLAGS.overwrite,
      ruleset=FLAGS.ruleset, authors=FLAGS.authors, affiliations=FLAGS.affiliations,
      steplab_requirement=FLAGS.steplab_requirement,
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)

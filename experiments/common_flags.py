"""Flags shared by the runner and the scorer (absl flags are process-global,
so a flag both apps take is defined once, here)."""

from absl import flags

EXPERIMENT_DIR = flags.DEFINE_string(
    "experiment_dir",
    "runs",
    "The experiment directory: where experiments.run writes trial logs and"
    " checkpoints, and what experiments.score reads.",
)

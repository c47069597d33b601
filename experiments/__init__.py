"""steplab experiments: an AlgoPerf-style benchmark runner for the optimizers.

`run` is the command line: it tunes an optimizer of `optimizers.registry` or
an AlgoPerf submission (`submission`, `submissions/`) on the `workloads`
(search spaces from `tuning`, named schedules from `schedule_config`), trains
each trial under AlgoPerf's clock rules (`trainer`, with `checkpoints`,
`logs`, `batches`, `step_cost`) on one device, a mesh (`sharding`) or several
processes (`distributed`, `spmd`, `launcher`), and runs the step-size
`probes`. `score` and `scoring` turn the logs into AlgoPerf scores;
`export_submission` writes a registry optimizer as an AlgoPerf submission;
`algoperf_compat` lets AlgoPerf's submission files run here. `example` is a
small training script.
"""

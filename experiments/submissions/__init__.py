"""AlgoPerf-style submissions: modules with the submission API.

Run one with `python -m experiments.run --submission_path=experiments/submissions/nadamw.py`.
Every registry optimizer is also a submission without a file
(`--optimizer=<name>`, via `experiments.submission.registry_submission`).
"""

"""Per-trial logs as AlgoPerf writes them, written atomically.

A trial directory holds `hparams.json`, `flags.json`, `meta_data.json`,
`measurements.csv` (one row per training step logged),
`eval_measurements.csv` (one row per evaluation) and, with the runner's
`--log_grad_norms`, `grad_norms.csv` (one row per step). Every write goes to a
temporary file in the same directory and is `os.replace`d into place, so a
run killed at any moment (SIGKILL included) leaves each file either as it
was or as it is now, never half-written. In a trial over several processes
(`experiments.distributed`) only process 0 writes: elsewhere the writers keep
their rows in memory and write nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from typing import Any, Iterable, Mapping

from experiments import distributed


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` so that readers never see a partial file (on process 0 only)."""
  if not distributed.is_primary():
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _jsonable(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None  # JSON has no inf/nan; null reads back as "not reached".
  if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
    return _jsonable(value.item())
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def write_json(path: str, obj: Mapping[str, Any]) -> None:
  write_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> dict[str, Any]:
  """The JSON object at `path`; ValueError naming the file if it is missing or corrupt."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path} does not exist") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); the trial log is corrupt.") from None


class CsvLog:
  """A CSV file rewritten atomically on every append (logs are small).

  Columns are the union of the keys seen so far, in first-seen order, so a
  metric that appears later (e.g. test metrics) gets its own column.
  """

  def __init__(self, path: str, rows: Iterable[Mapping[str, Any]] = ()):
    self.path = path
    self.rows: list[dict[str, Any]] = [dict(r) for r in rows]

  @classmethod
  def resume(cls, path: str, max_step: int | None = None, step_key: str = "global_step") -> "CsvLog":
    """Reopens a log, dropping rows whose `step_key` is past `max_step` (work redone after resume)."""
    rows = []
    if os.path.exists(path):
      with open(path, newline="", encoding="utf-8") as f:
        rows = [_parse_row(r, step_key) for r in csv.DictReader(f)]
    if max_step is not None:
      rows = [r for r in rows if r.get(step_key, 0) <= max_step]
    return cls(path, rows)

  def append(self, row: Mapping[str, Any]) -> None:
    self.extend([row])

  def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
    """Appends `rows` with one atomic rewrite."""
    self.rows.extend(dict(row) for row in rows)
    columns: dict[str, None] = {}
    for r in self.rows:
      columns.update(dict.fromkeys(r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in self.rows:
      writer.writerow({k: _jsonable(v) for k, v in r.items()})
    write_atomic(self.path, out.getvalue())


def _parse_row(row: Mapping[str, str], step_key: str = "global_step") -> dict[str, Any]:
  parsed: dict[str, Any] = {}
  for key, text in row.items():
    if text in ("", None):
      parsed[key] = None
      continue
    try:
      number = float(text)
      parsed[key] = int(number) if key in ("global_step", step_key) else number
    except ValueError:
      parsed[key] = text
  return parsed

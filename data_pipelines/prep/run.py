"""`synclipmae prep`: a folder (or list) of talking-face videos -> a corpus of aligned face-crop clip records.

The rooms: `settings` (PrepConfig), `inputs` (listing, array-job shares, speakers, splits), `process` (one video
-> its clip records or its failures entry: the one per-input function), `parts` (the output directory: shards,
manifests, failures, finalize), and here the run: this job's inputs through a pool of worker processes. The TFDS
builders of the public corpora (`data_pipelines.corpora`) run the same per-input function in Beam's workers.

Splitting work: the sorted input list is dealt round-robin to `num_shards` jobs (input i goes to job i mod N), so
array jobs (Slurm, Kubernetes indexed jobs, xmanager) share one `--out` without talking to each other. Held-out
speakers are chosen per speaker without coordination too (an explicit list, or a stable hash of the speaker id
under `heldout_fraction`), and every worker writes separate shards per split. The last job to finish (the one
that finds every `jobs/JOB.json` of its N) runs `finalize`, which lists all parts into `{split}.jsonl` and writes
`corpus.json` last, making the directory a `synclipmae.data.corpus.Corpus`; `synclipmae prep --finalize_only`
does the same by hand (e.g. after a job was lost).

An input's clips all go into one shard, written only after the whole input succeeded (a failing input leaves no
clips). A rerun of the same job deletes a killed run's leftovers, reads every part manifest and failures file, and
skips inputs that are done or failed (`retry_failed` retries the failed ones).

Failure policy: every input ends either with clips in a committed part or with exactly one failures entry
(stage and reason) — unreadable, corrupt, truncated or empty files, no video stream, no audio track (unless
`allow_silent`), absurd resolution, decoding errors, no face, no clip long enough, a worker process that died,
and any unexpected exception (recorded with its type, so one bad file never stops a run). The command's exit
status is 1 when any input of the job has a failures entry.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data_pipelines.prep import inputs as inputs_lib
from data_pipelines.prep import parts as parts_lib
from data_pipelines.prep import process
from data_pipelines.prep.inputs import Input
from data_pipelines.prep.settings import PrepConfig, RunError
from synclipmae.data import corpus as corpus_lib

STAGE_WORKER = "worker"  # The worker process died (e.g. a native crash) while on this input.
MAX_WORKER_RETRIES = 1  # An input whose worker process dies is retried this often before it counts as failed.


class Worker:
  """An InputProcessor plus its PartWriter: `handle(input)` never raises for a bad input."""

  def __init__(self, out_dir: Path, job: str, config: PrepConfig):
    self.config = config
    self.processor = process.InputProcessor(config)
    self.parts = parts_lib.PartWriter(out_dir, job, config)

  def handle(self, item: Input) -> dict[str, Any]:
    outcome = self.processor.handle(item)
    result: dict[str, Any] = {"input": item.key, "clips": 0, "frames": 0, "failure": outcome.failure,
                              "committed": [], "timings": outcome.timings, "seconds": outcome.seconds}
    if outcome.failure is not None:
      self.parts.fail(outcome.failure)
      return result
    start = time.perf_counter()
    split = inputs_lib.split_of(outcome.speaker, self.config)
    result["committed"] = self.parts.add(item, outcome.clips, split)
    result["timings"] = {**outcome.timings, "write": time.perf_counter() - start}
    result.update(clips=len(outcome.clips), frames=outcome.frames,
                  seconds=outcome.seconds + result["timings"]["write"])
    return result

  def close(self) -> list[str]:
    committed = self.parts.close()
    self.processor.close()
    return committed


def _worker_main(out_dir: str, job: str, config: PrepConfig, wid: int, tasks, results) -> None:
  """Entry point of a worker process: inputs from `tasks` until None, messages to `results`."""
  try:
    worker = Worker(Path(out_dir), job, config)
  except BaseException:
    results.put(("error", wid, traceback.format_exc()))
    return
  results.put(("ready", wid, None))
  parent = os.getppid()
  while True:
    try:
      item = tasks.get(timeout=2.0)
    except queue.Empty:
      if os.getppid() != parent:  # The main process was killed: stop (the unfinished shard stays *.partial).
        worker.parts.abort()
        return
      continue
    if item is None:
      break
    results.put(("start", wid, item.key))
    results.put(("done", wid, worker.handle(item)))
  results.put(("closed", wid, worker.close()))


def run(inputs: str | Sequence[str], out_dir: str | os.PathLike, config: PrepConfig = PrepConfig(), *,
        shard_index: int = 0, num_shards: int = 1, num_workers: int = 1, retry_failed: bool = False,
        finalize_when: str = "auto", quiet: bool = False) -> dict[str, Any]:
  """Processes this job's share of `inputs` into `out_dir`; returns a summary (see `summary_line`).

  `num_workers` processes (1: in this process); `finalize_when`: "auto" (when every job of `num_shards` has
  finished), "always" or "never".
  """
  import tqdm
  config.validate()
  if num_workers < 1:
    raise RunError(f"--num_workers must be positive, got {num_workers}")
  if finalize_when not in ("auto", "always", "never"):
    raise RunError(f"finalize_when must be 'auto', 'always' or 'never', got {finalize_when!r}")
  started = time.time()
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  parts_lib.check_settings(out_dir, config)
  job = parts_lib.job_name(shard_index, num_shards)
  marker = out_dir / parts_lib.JOBS_DIR / f"{job}.json"
  marker.unlink(missing_ok=True)  # This job is running again: it must not count as finished meanwhile.
  parts_lib.clean_leftovers(out_dir, job)
  mine = inputs_lib.shard_inputs(inputs_lib.list_inputs(inputs), shard_index, num_shards)
  done, failed = parts_lib.read_state(out_dir)
  todo = collections.deque(i for i in mine if i.key not in done and (retry_failed or i.key not in failed))
  summary: dict[str, Any] = {"job": job, "inputs": len(mine), "skipped": len(mine) - len(todo), "processed": 0,
                             "clips": 0, "frames": 0, "failures": [], "timings": collections.Counter(),
                             "worker_seconds": 0.0}
  progress = tqdm.tqdm(total=len(todo), desc=f"prep {job}", unit="file", disable=quiet, mininterval=1.0,
                       dynamic_ncols=True)

  def account(result: dict[str, Any], undo: bool = False) -> None:
    """Counts a handled input; `undo` takes back one whose clips were lost (it will be handled again)."""
    sign = -1 if undo else 1
    summary["processed"] += sign
    summary["clips"] += sign * result["clips"]
    summary["frames"] += sign * result["frames"]
    if result["failure"] is not None:
      summary["failures"].append(result["failure"])
    if undo:
      progress.total += 1
    else:
      summary["worker_seconds"] += result.get("seconds", 0.0)
      summary["timings"].update(result["timings"])
    elapsed = max(time.time() - started, 1e-6)
    progress.set_postfix(clips=summary["clips"], failed=len(summary["failures"]),
                         fps=f"{summary['frames'] / elapsed:.1f}", refresh=False)
    progress.update(0 if undo else 1)

  try:
    if not todo:
      pass
    elif num_workers == 1 or len(todo) == 1:
      worker = Worker(out_dir, job, config)
      try:
        while todo:
          account(worker.handle(todo.popleft()))
      except BaseException:
        worker.parts.abort()
        raise
      worker.close()
    else:
      _run_pool(out_dir, job, config, todo, min(num_workers, len(todo)), account, progress)
  finally:
    progress.close()
  parts_lib.clean_leftovers(out_dir, job)  # E.g. the unfinished shards of workers that died.
  summary["seconds"] = round(time.time() - started, 2)
  summary["timings"] = {k: round(v, 3) for k, v in summary["timings"].items()}
  done, failed = parts_lib.read_state(out_dir)
  summary["failed_inputs"] = sorted(i.key for i in mine if i.key in failed and i.key not in done)
  corpus_lib.write_atomic(marker, json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
  finished = {p.stem for p in (out_dir / parts_lib.JOBS_DIR).glob(f"j*of{num_shards:05d}.json")}
  summary["finalized"] = False
  if finalize_when == "always" or (finalize_when == "auto" and
                                   all(parts_lib.job_name(i, num_shards) in finished for i in range(num_shards))):
    parts_lib.finalize(out_dir)
    summary["finalized"] = True
  return summary


def _run_pool(out_dir: Path, job: str, config: PrepConfig, todo: collections.deque, num_workers: int,
              account: Callable[..., None], progress) -> None:
  """Feeds `todo` to `num_workers` spawned processes one input at a time and survives their deaths.

  If a worker dies, the inputs whose clips sat in its uncommitted shard go back on the queue, and so does the
  input it was on, once (MAX_WORKER_RETRIES): when a worker dies on it again it gets a failures entry (stage
  "worker"), since then the input itself is the likely cause (a crash in native code). A replacement starts.
  """
  context = multiprocessing.get_context("spawn")  # Clean processes: no inherited model or codec state.
  results = context.Queue()
  workers: dict[int, dict[str, Any]] = {}
  failures = parts_lib.PartWriter(out_dir, job, config)  # Only for failures entries written here.
  deaths: collections.Counter = collections.Counter()  # Worker deaths per input.

  def start_worker() -> None:
    wid = max(workers, default=-1) + 1  # Ids are never reused.
    tasks = context.Queue()
    process = context.Process(target=_worker_main, args=(str(out_dir), job, config, wid, tasks, results),
                              daemon=True)
    process.start()
    workers[wid] = {"process": process, "tasks": tasks, "state": "starting", "item": None, "uncommitted": {},
                    "handled": 0}

  for _ in range(num_workers):
    start_worker()
  try:
    while True:
      for wid, w in list(workers.items()):
        if w["state"] == "idle":
          if todo:
            w["item"] = todo.popleft()
            w["tasks"].put(w["item"])
            w["state"] = "busy"
          elif not any(v["state"] in ("busy", "starting") for v in workers.values()):
            w["tasks"].put(None)
            w["state"] = "closing"
      if all(w["state"] == "closed" for w in workers.values()):
        return
      try:
        kind, wid, payload = results.get(timeout=0.5)
      except queue.Empty:
        for wid, w in list(workers.items()):
          if w["state"] != "closed" and not w["process"].is_alive():
            _replace_dead(wid, w, workers, todo, failures, account, progress, start_worker, deaths)
        continue
      w = workers[wid]
      if kind == "error":
        raise RunError(f"a prep worker could not start:\n{payload}")
      if kind == "ready":
        w["state"] = "idle"
      elif kind == "start":
        pass
      elif kind == "done":
        w["handled"] += 1
        if payload["clips"]:
          w["uncommitted"][payload["input"]] = (w["item"], payload)
        for key in payload["committed"]:
          w["uncommitted"].pop(key, None)
        w["item"], w["state"] = None, "idle"
        account(payload)
      elif kind == "closed":
        for key in payload:
          w["uncommitted"].pop(key, None)
        w["state"] = "closed"
        w["process"].join(timeout=30)
  finally:
    for w in workers.values():
      if w["process"].is_alive():
        w["process"].terminate()
        w["process"].join(timeout=10)


def _replace_dead(wid, w, workers, todo, failures, account, progress, start_worker, deaths) -> None:
  code = w["process"].exitcode
  w["state"] = "closed"
  if w["handled"] == 0 and w["item"] is None:
    raise RunError(f"prep worker {wid} exited with code {code} before taking any input")
  lost = []
  for item, result in w["uncommitted"].values():  # Their clips were in the dead worker's unfinished shard.
    account(result, undo=True)
    lost.append(item)
  item = w["item"]
  if item is not None:
    deaths[item.key] += 1
    if deaths[item.key] <= MAX_WORKER_RETRIES:
      lost.append(item)  # Perhaps killed from outside (e.g. out of memory elsewhere): try once more.
    else:
      entry = failures.fail(process.failure_entry(item, STAGE_WORKER, f"the worker process died (exit code {code}) "
                                                  f"on this input {deaths[item.key]} times"))
      account({"input": item.key, "clips": 0, "frames": 0, "failure": entry, "timings": {}})
  todo.extendleft(reversed(lost))
  start_worker()


def summary_line(summary: dict[str, Any], out_dir: str | os.PathLike) -> str:
  failed = summary["failed_inputs"]
  line = (f"prep {summary['job']}: {summary['inputs']} inputs ({summary['skipped']} already done or failed before), "
          f"{summary['processed']} processed: {summary['clips']} clips, {summary['frames']} frames in "
          f"{summary['seconds']:.1f} s; {len(failed)} failed")
  if failed:
    line += f" (see {Path(out_dir) / (parts_lib.FAILURES_FILE if summary['finalized'] else parts_lib.FAILURES_DIR)})"
  return line + ("; corpus.json written" if summary["finalized"] else "; not finalized yet (other jobs running)")

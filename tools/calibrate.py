#!/usr/bin/env python3
"""Calibrate a percentile table for QualityGate / AdaptiveStudentTeacher on
one or more running ComfyUI servers.

For each of the first N prompts of a prompt file, the client takes an
API-format workflow (ComfyUI: "Export (API)"), puts the prompt wherever a
string input contains the token ``{prompt}`` and ``base_seed + index`` into
every input whose value is the string ``"{seed}"`` (or, when the workflow has
none, into the ``seed`` / ``noise_seed`` of its sampler nodes: KSampler,
KSamplerAdvanced, SamplerCustom, RandomNoise), queues it with
``POST /prompt``, polls ``GET /history/<prompt_id>`` until it has finished and
reads the scores from every node output in the history that has a
``reflect_scores`` list (the QualityGate node's UI output; one score per
image; several such nodes are concatenated in node-id order).

Prompts are spread over the servers: one worker thread per server, each
server runs one job at a time. A job that fails (the workflow is rejected, the
execution errors, no scores, no result within ``--timeout``) is retried once,
possibly on another server, then reported. A server that cannot be reached
is dropped (its job goes back to the queue) and the others carry on.

Every finished prompt is appended to a JSONL state file (``--state``) as
``{"index", "prompt", "scores", "server", "seed"}``; a failed one as
``{"index", "prompt", "scores": null, "server", "error"}``. Rerunning with
the same state file skips the prompts that have scores (and retries the
failed ones), so an interrupted run resumes. At the end the k = 10..90
percentiles of all scores (numpy's linear interpolation, as the reference
``yandex-research/adaptive-diffusion`` computes its ``IR_percentiles_*.json``)
are written to ``--out`` as ``{"10": v, ..., "90": v}``.

The reference calibrates on the first 5,000 COCO captions
(``coco_captions_5k.csv``), one student image per prompt, guidance 0.

Needs the Python standard library, ``requests`` when installed (else
urllib), ``tqdm`` when installed (else a plain progress line), and numpy +
torch for the table (``samplers.quality_gate``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

PROMPT_TOKEN = "{prompt}"
SEED_TOKEN = "{seed}"
SEED_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "RandomNoise", "ZigzagKSampler", "WeakStrongReflection",
              "WeakStrongReflectionLoRA")
SEED_INPUTS = ("seed", "noise_seed")
SCORES_KEY = "reflect_scores"


class ServerUnreachable(Exception):
    """The server did not answer (connection refused, reset, name not found)."""


class JobError(Exception):
    """The server answered, but this job produced no scores."""


# --------------------------------------------------------------------------- pure parts

def load_workflow(path: str) -> dict:
    """An API-format workflow (``{node_id: {"class_type", "inputs"}}``) from a
    JSON file, checked; a UI-format file or one without the ``{prompt}`` token
    raises ValueError naming the file."""
    return check_workflow(read_json(path), str(path))


def read_json(path: str):
    """A JSON file's content; ValueError naming the file when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def check_workflow(graph, source: str = "workflow") -> dict:
    """``graph`` checked as an API-format workflow containing the ``{prompt}`` token."""
    if isinstance(graph, Mapping) and "nodes" in graph and "links" in graph:
        raise ValueError(f"{source}: this is a UI workflow; save it with 'Export (API)' in ComfyUI")
    if not isinstance(graph, Mapping) or not graph or not all(
            isinstance(n, Mapping) and "class_type" in n and isinstance(n.get("inputs", {}), Mapping)
            for n in graph.values()):
        raise ValueError(f"{source}: not an API-format workflow ({{node_id: {{'class_type', 'inputs'}}}})")
    if not any(isinstance(v, str) and PROMPT_TOKEN in v
               for n in graph.values() for v in n.get("inputs", {}).values()):
        raise ValueError(f"{source}: no string input contains the token {PROMPT_TOKEN} "
                         "(put it in the positive prompt's text)")
    return dict(graph)


def substitute(graph: Mapping, prompt: str, seed: int) -> dict:
    """A copy of ``graph`` with ``{prompt}`` replaced by ``prompt`` in every
    string input (also inside longer strings) and ``seed`` put into every input
    whose value is ``"{seed}"``; a workflow without that token gets ``seed`` in
    the integer ``seed`` / ``noise_seed`` inputs of its sampler nodes
    (``SEED_NODES``) only, so the seeds of other nodes (a model builder, a
    noise pattern) stay as they are. Links and other inputs are untouched."""
    out = copy.deepcopy(dict(graph))
    explicit = any(v == SEED_TOKEN for n in out.values() for v in n.get("inputs", {}).values())
    for node in out.values():
        inputs = node.get("inputs", {})
        for name, value in list(inputs.items()):
            if isinstance(value, str) and value == SEED_TOKEN:
                inputs[name] = int(seed)
            elif isinstance(value, str) and PROMPT_TOKEN in value:
                inputs[name] = value.replace(PROMPT_TOKEN, prompt)
            elif (not explicit and node.get("class_type") in SEED_NODES and name in SEED_INPUTS
                  and isinstance(value, int) and not isinstance(value, bool)):
                inputs[name] = int(seed)
    return out


def _valid_scores(scores) -> bool:
    return (isinstance(scores, list) and len(scores) > 0 and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores))


def load_state(path: str, prompts: Sequence[str] | None = None, key: Callable[[dict], object] | None = None,
               valid: Callable[[dict], bool] | None = None,
               check: Callable[[dict], str | None] | None = None, name: str = "calibrate") -> tuple[dict, dict]:
    """``(done, failed)`` from a JSONL state file: ``done`` maps a job key
    (``key(record)``, default the prompt index) to its record with scores
    (``valid(record)``, default a non-empty list of finite ``scores``; the last
    such line wins), ``failed`` to the error of its last failed attempt (when it
    has no scores). A missing or empty file is an empty state. A torn last line
    (an interrupted write) is ignored; any other unreadable line, a record whose
    prompt differs from ``prompts[index]``, or one for which ``check(record)``
    returns a message, raises ValueError naming the file and line."""
    key = key or (lambda rec: rec["index"])
    valid = valid or (lambda rec: _valid_scores(rec.get("scores")))
    done, failed = {}, {}
    if not path or not os.path.exists(path):
        return done, failed
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or isinstance(rec.get("index"), bool) or not isinstance(rec.get("index"), int):
                raise ValueError("no integer 'index'")
        except ValueError as e:
            if i == last:
                print(f"{name}: {path}: ignoring the torn last line {i + 1}", file=sys.stderr)
                continue
            raise ValueError(f"{path}: line {i + 1} is not a state record ({e})") from None
        idx = rec["index"]
        if prompts is not None:
            if not (0 <= idx < len(prompts)):
                raise ValueError(f"{path}: line {i + 1}: index {idx} is outside the {len(prompts)} prompts "
                                 "(a state file of another prompt list?)")
            if rec.get("prompt") != prompts[idx]:
                raise ValueError(f"{path}: line {i + 1}: index {idx} was {rec.get('prompt')!r}, the prompt file "
                                 f"has {prompts[idx]!r} (a state file of another prompt list?)")
        problem = check(rec) if check is not None else None
        if problem:
            raise ValueError(f"{path}: line {i + 1}: {problem}")
        k = key(rec)
        if valid(rec):
            done[k] = rec
            failed.pop(k, None)
        elif k not in done:
            failed[k] = str(rec.get("error") or "no scores")
    return done, failed


def collect_scores(entry: Mapping) -> list[float]:
    """The scores of a finished ``/history`` entry: the ``reflect_scores`` lists of
    its node outputs, concatenated in node-id order. Raises JobError when the
    execution failed or no output has scores."""
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        msg = "execution failed"
        for m in status.get("messages") or []:
            if isinstance(m, (list, tuple)) and len(m) == 2 and m[0] in ("execution_error", "execution_interrupted"):
                d = m[1] if isinstance(m[1], Mapping) else {}
                msg = f"{m[0]}: {d.get('node_type', '')} {d.get('exception_message', '')}".strip()
        raise JobError(msg)
    outputs = entry.get("outputs") or {}

    def order(k):
        return (0, int(k), "") if str(k).isdigit() else (1, 0, str(k))

    scores = []
    for node_id in sorted(outputs, key=order):
        out = outputs[node_id]
        if isinstance(out, Mapping) and SCORES_KEY in out:
            s = out[SCORES_KEY]
            if not _valid_scores(s):
                raise JobError(f"node {node_id}: {SCORES_KEY} is not a list of finite numbers: {s!r}")
            scores.extend(float(x) for x in s)
    if not scores:
        raise JobError(f"no node output has {SCORES_KEY!r} (does the workflow score its images with QualityGate?)")
    return scores


def normalize_server(url: str) -> str:
    """``host:port`` or a URL -> ``http(s)://host:port`` without a trailing slash."""
    url = url.strip()
    if not url:
        raise ValueError("server: empty address")
    if not re.match(r"^https?://", url):
        url = "http://" + url
    return url.rstrip("/")


# --------------------------------------------------------------------------- HTTP

def _request(method: str, url: str, payload=None, timeout: float = 30.0):
    """``(status, parsed JSON body)``; ServerUnreachable when nothing answers."""
    try:
        import requests
    except ImportError:
        requests = None
    if requests is not None:
        try:
            r = requests.request(method, url, json=payload, timeout=timeout)
        except requests.exceptions.ConnectionError as e:
            raise ServerUnreachable(f"{url}: {e}") from None
        except requests.exceptions.Timeout:
            raise JobError(f"{method} {url}: no answer within {timeout:g} s") from None
        status, text = r.status_code, r.text
    else:
        import urllib.error
        import urllib.request
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text = resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        except (socket.timeout, TimeoutError):
            raise JobError(f"{method} {url}: no answer within {timeout:g} s") from None
        except (urllib.error.URLError, ConnectionError) as e:
            raise ServerUnreachable(f"{url}: {getattr(e, 'reason', e)}") from None
    try:
        body = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        body = text
    return status, body


def _describe_rejection(body) -> str:
    if not isinstance(body, Mapping):
        return str(body)[:500]
    parts = []
    err = body.get("error")
    if isinstance(err, Mapping):
        parts.append(": ".join(str(err[k]) for k in ("message", "details") if err.get(k)))
    elif err:
        parts.append(str(err))
    for node_id, ne in (body.get("node_errors") or {}).items():
        for e in (ne.get("errors") or []) if isinstance(ne, Mapping) else []:
            parts.append(f"node {node_id} ({ne.get('class_type', '?')}): {e.get('message', '')} {e.get('details', '')}".strip())
    return "; ".join(p for p in parts if p) or json.dumps(body)[:500]


class ComfyClient:
    """One ComfyUI server: queue a graph, wait for it, return its scores."""

    def __init__(self, base_url: str, poll_interval: float = 0.5, job_timeout: float = 900.0,
                 request_timeout: float = 30.0, connect_retries: int = 3):
        self.base_url = normalize_server(base_url)
        self.poll_interval, self.job_timeout = float(poll_interval), float(job_timeout)
        self.request_timeout, self.connect_retries = float(request_timeout), int(connect_retries)

    def _call(self, method, path, payload=None):
        for attempt in range(self.connect_retries + 1):
            try:
                return _request(method, self.base_url + path, payload, self.request_timeout)
            except ServerUnreachable:
                if attempt == self.connect_retries:
                    raise
                time.sleep(min(2.0 ** attempt, 10.0))

    def submit(self, graph: Mapping, client_id: str) -> str:
        status, body = self._call("POST", "/prompt", {"prompt": graph, "client_id": client_id})
        if status != 200 or not isinstance(body, Mapping) or "prompt_id" not in body:
            raise JobError(f"rejected (HTTP {status}): {_describe_rejection(body)}")
        if body.get("node_errors"):
            raise JobError(f"rejected: {_describe_rejection(body)}")
        return str(body["prompt_id"])

    def wait(self, prompt_id: str, stop: threading.Event | None = None) -> Mapping:
        deadline = time.monotonic() + self.job_timeout
        while True:
            status, body = self._call("GET", f"/history/{prompt_id}")
            if status == 200 and isinstance(body, Mapping) and prompt_id in body:
                entry = body[prompt_id]
                st = entry.get("status") or {}
                if st.get("completed", True) or st.get("status_str") == "error":
                    return entry
            elif status != 200:
                raise JobError(f"GET /history/{prompt_id}: HTTP {status}")
            if time.monotonic() > deadline:
                raise JobError(f"no result after {self.job_timeout:g} s (prompt {prompt_id})")
            if stop is not None and stop.wait(self.poll_interval):
                raise JobError("stopped")
            elif stop is None:
                time.sleep(self.poll_interval)

    def run(self, graph: Mapping, client_id: str, stop: threading.Event | None = None) -> list[float]:
        return collect_scores(self.wait(self.submit(graph, client_id), stop))

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        """The bytes of an output image (``GET /view``), as a history entry names it."""
        from urllib.parse import urlencode
        url = f"{self.base_url}/view?" + urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        try:
            import urllib.error
            import urllib.request
            with urllib.request.urlopen(url, timeout=self.request_timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            raise JobError(f"GET /view {filename}: HTTP {e.code}") from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
            raise ServerUnreachable(f"{url}: {getattr(e, 'reason', e)}") from None


# --------------------------------------------------------------------------- the run

class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "calibrate", unit: str = "prompt"):
        self.bar, self.enabled, self.n, self.total = None, enabled, initial, total
        self.desc, self.unit = desc, unit
        if not enabled:
            return
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, file=sys.stderr)
        except ImportError:
            self._line()

    def _line(self):
        sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} {self.unit}s done")
        sys.stderr.flush()

    def write(self, msg: str):
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            if self.enabled:
                sys.stderr.write("\r\033[K")
            print(msg, file=sys.stderr)
            if self.enabled:
                self._line()

    def update(self):
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            self._line()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


@dataclass
class JobsResult:
    """What :func:`run_jobs` ended with: ``records`` (key -> record, resumed ones
    included), ``failed`` (key -> last error, after the retries), ``pending``
    (keys nobody ran: no server left, or stopped), ``resumed``, ``per_server``
    (jobs done by each server in this run), ``dropped`` (servers given up, with
    the reason)."""
    records: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    resumed: int = 0
    per_server: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)


class CalibrationResult(JobsResult):
    """A calibration's :class:`JobsResult`: keys are prompt indices, ``pending`` sorted."""

    def scores(self) -> list[float]:
        """All scores, prompt by prompt in index order."""
        return [s for i in sorted(self.records) for s in self.records[i]["scores"]]


def server_urls(servers: Sequence[str]) -> list[str]:
    """The normalised, de-duplicated server addresses (at least one)."""
    urls = []
    for s in servers:
        u = normalize_server(s)
        if u not in urls:
            urls.append(u)
    if not urls:
        raise ValueError("servers: at least one ComfyUI address is needed")
    return urls


def run_jobs(keys: Sequence, execute: Callable[[object, object, str], dict], servers: Sequence[str],
             state_path: str | None = None, done: Mapping | None = None, retries: int = 1,
             client_factory: Callable[[str], object] | None = None, progress: bool = True,
             stop: threading.Event | None = None, log: Callable[[str], None] | None = None,
             failure_record: Callable[[object, str, str], dict] | None = None, name: str = "calibrate",
             unit: str = "prompt") -> JobsResult:
    """Run the jobs ``keys`` (those not in ``done``) over ``servers``: one worker
    thread per server, one job at a time each. ``execute(client, key, url)``
    runs one job on ``client = client_factory(url)`` (default
    :class:`ComfyClient`) and returns its record, appended to ``state_path``
    as one JSON line. It raises :class:`ServerUnreachable` to drop the server
    (the job goes back to the queue) or anything else for a failed job
    (retried ``retries`` times, on whichever server is free, then recorded
    with ``failure_record(key, url, error)``). Ctrl-C stops the workers; the
    finished jobs are in the state file."""
    urls = server_urls(servers)
    factory = client_factory or ComfyClient
    stop = stop or threading.Event()
    done = dict(done or {})
    result = JobsResult(records=dict(done), resumed=len(done), per_server={u: 0 for u in urls})
    jobs = deque({"key": k, "attempts": 0} for k in keys if k not in done)
    cv = threading.Condition()
    in_flight = [0]
    bar = _Progress(len(done) + len(jobs), len(done), progress, name, unit)
    log = log or bar.write

    state_file = None
    if state_path:
        os.makedirs(os.path.dirname(os.path.abspath(state_path)), exist_ok=True)
        _repair_tail(state_path)
        state_file = open(state_path, "a", encoding="utf-8")

    def record(rec):
        if state_file is not None:
            state_file.write(json.dumps(rec, ensure_ascii=False) + "\n")
            state_file.flush()

    def take():
        with cv:
            while True:
                if stop.is_set():
                    return None
                if jobs:
                    in_flight[0] += 1
                    return jobs.popleft()
                if in_flight[0] == 0:
                    return None
                cv.wait(0.2)

    def worker(url):
        client = factory(url)
        while True:
            job = take()
            if job is None:
                return
            k = job["key"]
            try:
                rec = execute(client, k, url)
            except ServerUnreachable as e:
                with cv:
                    in_flight[0] -= 1
                    jobs.appendleft(job)
                    result.dropped[url] = str(e)
                    cv.notify_all()
                log(f"{name}: dropping {url}: unreachable ({e})")
                return
            except Exception as e:  # JobError or anything unexpected from the client: count an attempt
                err = f"{type(e).__name__}: {e}" if not isinstance(e, JobError) else str(e)
                with cv:
                    in_flight[0] -= 1
                    job["attempts"] += 1
                    if stop.is_set():
                        jobs.appendleft(job)
                    elif job["attempts"] <= retries:
                        jobs.append(job)
                        log(f"{name}: {unit} {k} failed on {url} ({err}); retrying")
                    else:
                        result.failed[k] = err
                        if failure_record is not None:
                            record(failure_record(k, url, err))
                        log(f"{name}: {unit} {k} failed {job['attempts']} times, last on {url}: {err}")
                    cv.notify_all()
                continue
            with cv:
                in_flight[0] -= 1
                result.records[k] = rec
                result.failed.pop(k, None)
                result.per_server[url] += 1
                record(rec)
                bar.update()
                cv.notify_all()

    threads = [threading.Thread(target=worker, args=(u,), name=f"{name} {u}", daemon=True) for u in urls]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        log(f"{name}: interrupted; finished {unit}s are in the state file, run again to resume")
        for t in threads:
            t.join(5.0)
    finally:
        bar.close()
        if state_file is not None:
            state_file.close()
    with cv:
        result.pending = [j["key"] for j in jobs if j["key"] not in result.failed]
    return result


def run_calibration(prompts: Sequence[str], workflow: Mapping, servers: Sequence[str],
                    state_path: str | None = None, base_seed: int = 0, retries: int = 1,
                    client_factory: Callable[[str], object] | None = None, progress: bool = True,
                    stop: threading.Event | None = None, log: Callable[[str], None] | None = None) -> CalibrationResult:
    """Run ``workflow`` once per prompt over ``servers`` (one worker each, one job
    at a time per server) and collect the scores; resume from and append to
    ``state_path``. ``client_factory(url)`` makes an object with
    ``run(graph, client_id, stop) -> scores`` (default :class:`ComfyClient`);
    it raises :class:`ServerUnreachable` to drop the server (the job goes back to
    the queue) or :class:`JobError` for a failed job (retried ``retries`` times,
    on whichever server is free). Returns a :class:`CalibrationResult`."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: none to run")
    server_urls(servers)
    graph = check_workflow(workflow)
    stop = stop or threading.Event()
    done, _ = load_state(state_path, prompts) if state_path else ({}, {})
    client_id = uuid.uuid4().hex

    def execute(client, i, url):
        seed = int(base_seed) + i
        scores = [float(s) for s in client.run(substitute(graph, prompts[i], seed), client_id, stop)]
        if not _valid_scores(scores):
            raise JobError(f"scores are not a non-empty list of finite numbers: {scores!r}")
        return {"index": i, "prompt": prompts[i], "scores": scores, "server": url, "seed": seed}

    r = run_jobs(range(len(prompts)), execute, servers, state_path, done, retries, client_factory, progress, stop,
                 log, lambda i, url, err: {"index": i, "prompt": prompts[i], "scores": None, "server": url,
                                           "error": err})
    return CalibrationResult(**{**vars(r), "pending": sorted(r.pending)})


def _repair_tail(path: str) -> None:
    """Before appending to a state file: a last line without its newline gets
    one when it is a whole record, and is cut off when it is torn (an
    interrupted write, which load_state ignores), so that it does not become an
    unreadable line in the middle."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:].decode("utf-8"))
            f.write(b"\n")
        except ValueError:
            f.truncate(cut)


def write_table(scores: Sequence[float], path: str | None) -> dict[str, float]:
    """The k = 10..90 percentile table of ``scores`` (``samplers.quality_gate.percentile_table``),
    written as one JSON line to ``path`` when given."""
    from tools.reflect_pack import module
    percentile_table = module("samplers.quality_gate").percentile_table
    table = percentile_table(scores)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(table) + "\n")
    return table


def summary(result: CalibrationResult, table: Mapping | None, total: int, seconds: float) -> str:
    scores = result.scores()
    lines = [f"prompts: {len(result.records)}/{total} scored ({result.resumed} resumed), "
             f"{len(result.failed)} failed, {len(result.pending)} not run; {len(scores)} images; {seconds:.1f} s"]
    if scores:
        mean = sum(scores) / len(scores)
        sd = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
        lines.append(f"scores: mean {mean:.4f}, std {sd:.4f}, min {min(scores):.4f}, max {max(scores):.4f}")
    for url, n in result.per_server.items():
        lines.append(f"  {url}: {n} this run" + (f" (dropped: {result.dropped[url]})" if url in result.dropped else ""))
    if result.failed:
        shown = sorted(result.failed)[:10]
        lines.append("failed: " + "; ".join(f"#{i}: {result.failed[i]}" for i in shown)
                     + (" ..." if len(result.failed) > len(shown) else ""))
    if table:
        lines.append("table: " + ", ".join(f"{k}: {v:.4f}" for k, v in table.items()))
    return "\n".join(lines)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The prompt, seed, server and job options shared by calibrate and evaluate."""
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="prompt file: .tsv (PartiPrompts, column Prompt), .csv (drawbench: Prompts; COCO: caption) "
                        "or .txt (one per line)")
    p.add_argument("--column", help="prompt column of a .tsv/.csv file (default: Prompt, Prompts, prompt, "
                                    "prompts, caption or text, the first present)")
    p.add_argument("-n", "--limit", type=int, default=None, metavar="N",
                   help="use the first N prompts in file order (default: all)")
    p.add_argument("--server", action="append", metavar="URL",
                   help="ComfyUI address; repeat for several servers (default: http://127.0.0.1:8188)")
    p.add_argument("--base-seed", type=int, default=0, help="seed of prompt 0; prompt i gets base_seed + i (default 0)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one job (default 900)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between /history polls (default 0.5)")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed job (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="calibrate.py",
        description="Score a student's images for N prompts on ComfyUI servers and write the ImageReward "
                    "percentile table {\"10\": v, ..., \"90\": v} used by QualityGate / AdaptiveStudentTeacher.",
        epilog="The workflow is an API-format export (ComfyUI: Export (API)) that generates with the student and "
               "scores with QualityGate; put the token {prompt} in the prompt text (also used for the score). "
               "Inputs set to the string {seed} (else the seed / noise_seed of sampler nodes) get base_seed + prompt "
               "index. Example: "
               "python tools/calibrate.py --prompts datasets/coco_captions_5k.csv -n 5000 "
               "--workflow student_score_api.json --server http://127.0.0.1:8188 --server http://10.0.0.2:8188 "
               "--state lcm.jsonl --out IR_percentiles_lcm_sdxl.json")
    add_run_arguments(p)
    p.add_argument("--workflow", required=True, metavar="FILE", help="API-format workflow JSON with {prompt}")
    p.add_argument("--state", metavar="FILE.jsonl",
                   help="JSONL progress file to resume from and append to (default: OUT.progress.jsonl when "
                        "--out is given, else none)")
    p.add_argument("--out", metavar="FILE.json", help="where to write the percentile table (default: print only)")
    a = p.parse_args(argv)

    from tools.reflect_pack import module
    read_prompts = module("samplers.adaptive").read_prompts
    try:
        prompts = read_prompts(a.prompts, a.limit, a.column)
        workflow = load_workflow(a.workflow)
        state = a.state or (os.path.splitext(a.out)[0] + ".progress.jsonl" if a.out else None)
        servers = a.server or ["http://127.0.0.1:8188"]
        t0 = time.monotonic()
        result = run_calibration(
            prompts, workflow, servers, state, a.base_seed, a.retries,
            client_factory=lambda u: ComfyClient(u, poll_interval=a.poll, job_timeout=a.timeout),
            progress=not a.no_progress)
    except ValueError as e:
        print(f"calibrate: {e}", file=sys.stderr)
        return 2
    scores = result.scores()
    table = write_table(scores, a.out) if scores else None
    print(summary(result, table, len(prompts), time.monotonic() - t0))
    if a.out and table:
        print(f"wrote {a.out}" + ("" if not (result.failed or result.pending) else
                                  f" from {len(result.records)} of {len(prompts)} prompts"))
    if state:
        print(f"state: {state}")
    if not scores:
        print("calibrate: no scores, no table written", file=sys.stderr)
        return 1
    return 0 if not (result.failed or result.pending) else 1


if __name__ == "__main__":
    sys.exit(main())

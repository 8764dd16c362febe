"""Execute notebooks with papermill: check parameters first, run in parallel, record.

``run_many`` is what ``rlbook run`` and ``rlbook build`` call. Each notebook runs in a
subprocess of its own (``python -m rlbook._worker``), so one failure or time-out never
stops the others; each run yields a :class:`RunRecord` (profile, seed, wall seconds,
peak memory, package versions, claims with values and pass/fail, the failing cell).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlbook import catalog, paths
from rlbook.runtime import PROFILES, check_profile

DEFAULT_TIMEOUT = {"smoke": 300, "full": 4 * 3600}
"""seconds one notebook may run before it is stopped (per profile)"""


class ParameterError(ValueError):
    """A bad ``-p NAME=VALUE``, profile or seed: raised before anything executes."""


# --------------------------------------------------------------------------- parameters
def notebook_parameters(nb_path: Path) -> dict[str, object]:
    """The defaults of the cell tagged ``parameters``, as Python values.

    Every default must be a literal (``profile = "smoke"``); anything else is an error
    in the notebook, reported as such.
    """
    import papermill

    found = papermill.inspect_notebook(str(nb_path))
    if not found:
        raise ParameterError(f"{nb_path}: no cell tagged 'parameters'")
    out = {}
    for name, info in found.items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            raise ParameterError(
                f"{nb_path}: parameter {name} = {info['default']} is not a flat literal"
            ) from None
    return out


def _coerce(name: str, text: str, default: object) -> object:
    """Parse the command line's ``text`` into the type of the notebook's ``default``."""
    kind = type(default)
    try:
        if kind is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if default is None:
            return ast.literal_eval(text) if text not in ("", "None") else None
        value = ast.literal_eval(text)
        if not isinstance(value, kind):
            raise ValueError
        return value
    except (ValueError, SyntaxError):
        raise ParameterError(
            f"parameter {name} must be {kind.__name__} (default {default!r}), got {text!r}"
        ) from None


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["lr=0.1", "steps=5"]`` → ``{"lr": "0.1", "steps": "5"}`` (values still text)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ParameterError(f"-p expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k.isidentifier():
            raise ParameterError(f"-p: {k!r} is not a valid parameter name")
        out[k] = v
    return out


def resolve_parameters(
    nb_path: Path, profile: str, seed: int, overrides: dict[str, str]
) -> dict[str, object]:
    """Check ``overrides`` against the notebook's parameters cell; return what papermill injects."""
    try:
        check_profile(profile)
    except ValueError as e:
        raise ParameterError(str(e)) from None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    defaults = notebook_parameters(nb_path)
    for required in ("profile", "seed"):
        if required not in defaults:
            raise ParameterError(f"{nb_path}: the parameters cell has no {required!r}")
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ParameterError(
            f"{nb_path.stem}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(defaults))}"
        )
    params: dict[str, object] = {"profile": profile, "seed": seed}
    for k, text in overrides.items():
        if k in ("profile", "seed"):
            raise ParameterError(f"set {k} with --{k}, not -p")
        params[k] = _coerce(k, text, defaults[k])
    return params


# --------------------------------------------------------------------------- records
@dataclass
class RunRecord:
    """What one execution of one notebook produced."""

    slug: str
    part: str
    profile: str
    seed: int
    parameters: dict
    status: str = "pending"
    """``ok``, ``failed`` (a cell raised), ``timeout``, or ``claims-failed``"""
    seconds: float = 0.0
    peak_mb: float = 0.0
    claims: list[dict] = field(default_factory=list)
    error: str | None = None
    """for a failure: which cell, and the exception"""
    output: str = ""
    versions: dict = field(default_factory=dict)
    finished: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "numpy", "transformers", "trl", "papermill"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


# --------------------------------------------------------------------------- execution
def _execute(paper: catalog.Paper, params: dict, output: Path, timeout: int, threads: int | None) -> RunRecord:
    rec = RunRecord(paper.slug, paper.part, str(params["profile"]), int(params["seed"]), params,
                    output=str(output), versions=package_versions())
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlbook-run-") as tmp:
        claims_file = Path(tmp) / "claims.jsonl"
        result_file = Path(tmp) / "result.json"
        env = dict(os.environ)
        env["RLBOOK_CLAIMS_FILE"] = str(claims_file)
        env.setdefault("HF_HUB_OFFLINE", "1" if params["profile"] == "smoke" else env.get("HF_HUB_OFFLINE", "0"))
        env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "ignore::DeprecationWarning")
        if threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env[var] = str(threads)
        job = {
            "input": str(paper.notebook),
            "output": str(output),
            "parameters": params,
            "cwd": str(paper.notebook.parent),
            "result": str(result_file),
            "cell_timeout": timeout,
        }
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "rlbook._worker", json.dumps(job)],
                env=env, capture_output=True, text=True, timeout=timeout + 60,
            )
            rec.seconds = time.perf_counter() - t0
            if result_file.exists():
                res = json.loads(result_file.read_text())
                rec.peak_mb = res.get("peak_mb", 0.0)
                rec.seconds = res.get("seconds", rec.seconds)
                rec.error = res.get("error")
            elif proc.returncode != 0:
                rec.error = (proc.stderr or proc.stdout)[-2000:]
            rec.status = "ok" if (rec.error is None and proc.returncode == 0) else "failed"
        except subprocess.TimeoutExpired:
            rec.seconds = time.perf_counter() - t0
            rec.status, rec.error = "timeout", f"stopped after {timeout} s"
        rec.claims = [c for c in (json.loads(x) for x in claims_file.read_text().splitlines() if x.strip())] if claims_file.exists() else []
    if rec.status == "ok" and any(not c["passed"] for c in rec.claims):
        rec.status = "claims-failed"
        rec.error = "failed claims: " + ", ".join(c["id"] for c in rec.claims if not c["passed"])
    rec.finished = time.strftime("%Y-%m-%d %H:%M:%S")
    return rec


def output_path(paper: catalog.Paper, out_dir: Path, seed: int, primary: bool) -> Path:
    """Where the executed copy goes: ``<out>/notebooks/<part>/<slug>.ipynb`` (same relative
    path as in the repository) for the primary seed, ``<out>/../runs/seed<N>/…`` for others."""
    if primary:
        return out_dir / paper.relpath
    return paths.build_dir() / "runs" / f"seed{seed}" / paper.relpath


def plan(
    slugs: list[str], profile: str, seeds: list[int], overrides: dict[str, str]
) -> list[tuple[catalog.Paper, dict]]:
    """Resolve slugs and check every parameter of every run before anything executes."""
    jobs = []
    for slug in slugs:
        paper = catalog.find(slug)
        for seed in seeds:
            jobs.append((paper, resolve_parameters(paper.notebook, profile, seed, overrides)))
    return jobs


def run_many(
    jobs: list[tuple[catalog.Paper, dict]],
    out_dir: Path,
    jobs_n: int = 1,
    timeout: int | None = None,
    progress=print,
) -> list[RunRecord]:
    """Execute planned runs, ``jobs_n`` at a time (one thread each when parallel)."""
    threads = 1 if jobs_n > 1 else None
    first_seed = {}
    for paper, params in jobs:
        first_seed.setdefault(paper.slug, params["seed"])

    def one(item):
        paper, params = item
        t = timeout or DEFAULT_TIMEOUT[str(params["profile"])]
        out = output_path(paper, out_dir, int(params["seed"]), params["seed"] == first_seed[paper.slug])
        rec = _execute(paper, params, out, t, threads)
        progress(f"  {rec.status:>13}  {rec.slug} (seed {rec.seed}) {rec.seconds:6.1f} s"
                 + (f"  -- {rec.error.splitlines()[0][:150]}" if rec.error else ""))
        return rec

    with ThreadPoolExecutor(max_workers=max(1, jobs_n)) as pool:
        return list(pool.map(one, jobs))


# --------------------------------------------------------------------------- the ledger file
def ledger_path() -> Path:
    return paths.build_dir() / "runs" / "ledger.json"


def save_records(records: list[RunRecord]) -> Path:
    """Merge records into ``_build/runs/ledger.json`` (one entry per slug, profile and seed)."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {"runs": []}
    keep = {(r.slug, r.profile, r.seed) for r in records}
    runs = [r for r in data["runs"] if (r["slug"], r["profile"], r["seed"]) not in keep]
    runs += [asdict(r) for r in records]
    runs.sort(key=lambda r: (r["part"], r["slug"], r["profile"], r["seed"]))
    path.write_text(json.dumps({"runs": runs}, indent=1))
    return path


def load_records() -> list[dict]:
    path = ledger_path()
    return json.loads(path.read_text())["runs"] if path.exists() else []


def summary(records: list[RunRecord]) -> str:
    """A plain-text table of the runs, failures named with their cell."""
    lines = [f"{'notebook':<42} {'seed':>4} {'status':>13} {'seconds':>8} {'peak MB':>8} {'claims':>7}"]
    for r in records:
        npass = sum(c["passed"] for c in r.claims)
        lines.append(
            f"{r.slug:<42} {r.seed:>4} {r.status:>13} {r.seconds:>8.1f} {r.peak_mb:>8.0f} "
            f"{npass:>3}/{len(r.claims):<3}"
        )
    bad = [r for r in records if not r.ok]
    for r in bad:
        lines.append(f"\n{r.slug} (seed {r.seed}) {r.status}: {r.error}")
    n_ok = len(records) - len(bad)
    lines.append(f"\n{n_ok} passed, {len(bad)} failed")
    return "\n".join(lines)


__all__ = ["PROFILES", "ParameterError", "RunRecord", "plan", "run_many", "summary"]

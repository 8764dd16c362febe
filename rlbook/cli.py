"""The book's command line: ``rlbook list | run | build | ledger`` (also ``python -m rlbook``).

- ``rlbook list`` -- the 75 papers by part, written or coming.
- ``rlbook run SLUG [SLUG ...] [--all] [--profile smoke|full] [--seed N ...] [-p NAME=VALUE ...] [--jobs N]``
  -- check every parameter against the notebook's ``parameters`` cell, then execute;
  exit 1 if a notebook fails or a claim fails, 2 for bad input.
- ``rlbook build [--seeds 0,1,2] [--jobs N] [--no-run]`` -- execute every notebook
  into the staging area, write the ledger and run-statistics pages, build the site.
- ``rlbook ledger`` -- print the claims ledger of the recorded runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlbook.runtime import PROFILES


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative integers, got {text!r}")
    return seeds


def _nonneg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def _positive(text: str) -> int:
    v = _nonneg(text)
    if v == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return v


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rlbook", description="Run and build the RL Paper Book.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,run,build,ledger}")

    sub.add_parser("list", help="list the papers by part, written or coming")

    r = sub.add_parser("run", help="execute notebooks with papermill and check their claims")
    r.add_argument("slugs", nargs="*", metavar="SLUG", help="paper slugs (see `rlbook list`)")
    r.add_argument("--all", action="store_true", help="every written notebook")
    r.add_argument("--profile", default="smoke", help=f"one of {', '.join(PROFILES)} (default smoke)")
    r.add_argument("--seed", type=_nonneg, action="append", default=None,
                   help="seed (repeat for several seeds; default 0)")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter of the notebook's parameters cell")
    r.add_argument("--jobs", type=_positive, default=1, help="notebooks run in parallel (1 thread each)")
    r.add_argument("--timeout", type=_positive, default=None, help="seconds per notebook")
    r.add_argument("--out", type=Path, default=None,
                   help="staging folder for executed copies (default _build/stage)")

    b = sub.add_parser("build", help="execute every notebook and build the site")
    b.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="seeds to run (default 0,1,2)")
    b.add_argument("--jobs", type=_positive, default=2, help="notebooks run in parallel")
    b.add_argument("--no-run", action="store_true", help="build from the recorded runs only")
    b.add_argument("--timeout", type=_positive, default=None, help="seconds per notebook")

    sub.add_parser("ledger", help="print the claims ledger of the recorded runs")
    return ap


def cmd_list() -> int:
    from rlbook import catalog

    for part in catalog.parts():
        print(f"\n{part.id}: {part.title}")
        for q in part.papers:
            mark = "written" if q.written else "coming "
            print(f"  [{mark}] {q.slug:<48} arXiv {q.arxiv}")
    n = len(catalog.written())
    print(f"\n{n} of {len(catalog.papers())} notebooks written")
    return 0


def cmd_run(args) -> int:
    from rlbook import catalog, paths, runner

    if args.all and args.slugs:
        print("rlbook run: give slugs or --all, not both", file=sys.stderr)
        return 2
    slugs = [q.slug for q in catalog.written()] if args.all else args.slugs
    if not slugs:
        print("rlbook run: name at least one notebook (or --all); `rlbook list` shows them", file=sys.stderr)
        return 2
    seeds = args.seed or [0]
    try:
        overrides = runner.parse_assignments(args.param)
        jobs = runner.plan(slugs, args.profile, seeds, overrides)
    except (runner.ParameterError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) else str(e)
        print(f"rlbook run: {msg}", file=sys.stderr)
        return 2
    out = args.out or (paths.build_dir() / "stage")
    print(f"running {len(jobs)} notebook run(s), profile {args.profile}, {args.jobs} at a time")
    records = runner.run_many(jobs, out, jobs_n=args.jobs, timeout=args.timeout)
    runner.save_records(records)
    print(runner.summary(records))
    return 0 if all(r.ok for r in records) else 1


def cmd_build(args) -> int:
    from rlbook import book

    return book.build(seeds=args.seeds, jobs=args.jobs, run=not args.no_run, timeout=args.timeout)


def cmd_ledger() -> int:
    from rlbook import book, runner

    recs = runner.load_records()
    if not recs:
        print("no recorded runs yet: `rlbook run SLUG` or `rlbook build` first")
        return 1
    print(book.ledger_text(recs))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        return cmd_list()
    if args.command == "run":
        return cmd_run(args)
    if args.command == "build":
        return cmd_build(args)
    return cmd_ledger()


if __name__ == "__main__":
    raise SystemExit(main())

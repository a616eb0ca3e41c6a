"""The suite's two commands: ``mae-dense pipeline CONFIG`` and ``mae-dense report --db FILE``.

``mae-dense pipeline CONFIG``: every backbone x task x seed, scheduled over the GPUs, into one leaderboard.
The config lists the backbones (``checkpoint:``, ``pretrain:`` or ``random: true``) and the tasks
(``ade20k``, ``coco``, ``probe``); see :mod:`mae_dense.suite.spec` and ``configs/pipelines/demo.yaml``.
Each (backbone, task, seed) cell is resumable on its own; a failing cell is recorded with its reason and
the others go on; every finished cell goes to the results store, and the report is written from it. The
exit status is 1 when a cell failed, with one summary line last. With ``launcher: slurm`` every cell is a
Slurm job and the command returns once they are submitted; run again, it shows each cell's state, collects
the finished ones and submits what is missing (``--retry-failed``: the failed ones too); ``--wait`` blocks
until every cell ended (:mod:`mae_dense.suite.cluster`).

``mae-dense pipeline CONFIG --dry-run``: offline, starts nothing: every cell (sweep points included), every
file to download (size from the config where given), the data pre-flight and an estimate of the GPU-hours.
A real run first runs the pre-flight: a stage whose data root or annotation file is missing or fails its
check stops the pipeline before anything (pretraining included) starts.

``mae-dense report --db FILE [--out DIR]``: the leaderboard rebuilt from a results store alone. Runs from
different pipelines, machines and weeks that wrote to the same store appear in one leaderboard
(``leaderboard.md``, ``.json``, ``.html`` and the figures).
"""

from __future__ import annotations

import argparse
from collections import Counter

from ..cli.common import run_tool
from ..errors import PipelineError
from .report import write_report
from .runner import Suite
from .spec import SuiteSpec, load_spec
from .store import ResultStore

_SHOWN_FAILURES = 3


def failure_summary(outcome: dict[str, str | None], report: str) -> str | None:
    """One line naming the failed cells (the first few with their reason), or None when all finished."""
    failed = [(k, why) for k, why in outcome.items() if why is not None]
    if not failed:
        return None
    shown = '; '.join(f'{k} ({why})' for k, why in failed[:_SHOWN_FAILURES])
    more = f'; and {len(failed) - _SHOWN_FAILURES} more' if len(failed) > _SHOWN_FAILURES else ''
    return (
        f'{len(failed)} of {len(outcome)} cells failed: {shown}{more}; the others finished; report: {report}'
    )


def pipeline_main(argv: list[str] | None = None) -> int:
    """``mae-dense pipeline CONFIG [--work-dir DIR] [--results-dir DIR] [--db FILE] [--wait] [--retry-failed]``."""
    parser = argparse.ArgumentParser(
        prog='mae-dense pipeline', description='every backbone x task x seed into one leaderboard'
    )
    parser.add_argument('config', help='pipeline config (.yaml or .py)')
    parser.add_argument('--work-dir', help='override the pipeline work_dir')
    parser.add_argument('--results-dir', help='where the leaderboard and figures go (default: results)')
    parser.add_argument('--db', help='the results store (default: <results_dir>/results.sqlite)')
    parser.add_argument('--wait', action='store_true', help='launcher slurm: block until every cell ended')
    parser.add_argument(
        '--retry-failed', action='store_true', help='launcher slurm: submit the failed cells again'
    )
    parser.add_argument('--poll', type=float, default=60.0, help='seconds between checks with --wait')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='list the cells, downloads, data checks and a GPU-hours estimate; start nothing (offline)',
    )
    args = parser.parse_args(argv)

    def _run() -> int:
        spec = load_spec(args.config, work_dir=args.work_dir, results_dir=args.results_dir, db=args.db)
        if args.dry_run:
            from .dryrun import dry_run

            print('\n'.join(dry_run(spec)), flush=True)
            return 0
        if spec.launcher == 'slurm':
            return _cluster(spec, args)
        suite = Suite(spec)
        outcome = suite.run()
        suite.draw_figures()
        md = write_report(suite.store, spec.results_dir, spec.title)
        print(f'[pipeline] report: {md} (+ leaderboard.json, leaderboard.html); store: {spec.db}', flush=True)
        summary = failure_summary(outcome, str(md))
        if summary:
            raise PipelineError(summary)
        return 0

    return run_tool(_run)


def _cluster(spec: SuiteSpec, args: argparse.Namespace) -> int:
    """``launcher: slurm``: submit, show, collect (:mod:`.cluster`); the report once every cell ended."""
    from .cluster import SlurmSuite, status_table, summary  # submitit only where a cluster is used

    suite = SlurmSuite(spec)
    out = suite.wait(args.retry_failed, args.poll) if args.wait else suite.step(args.retry_failed)
    print(status_table(out), flush=True)
    print(f'[pipeline] {summary(suite, out)}', flush=True)
    counts = Counter(s.state for s in out.values())
    if counts['queued'] or counts['running']:
        print(
            '[pipeline] run the same command again to see and collect the cells (--wait: until all end)',
            flush=True,
        )
        return 0
    if not counts['failed']:
        suite.draw_figures()
    md = write_report(suite.store, spec.results_dir, spec.title)
    print(f'[pipeline] report: {md} (+ leaderboard.json, leaderboard.html); store: {spec.db}', flush=True)
    failed = failure_summary({k: s.reason if s.state == 'failed' else None for k, s in out.items()}, str(md))
    if failed:
        hint = '' if args.retry_failed else ' (--retry-failed submits them again)'
        raise PipelineError(failed + hint)
    return 0


def report_main(argv: list[str] | None = None) -> int:
    """``mae-dense report --db FILE [--out DIR] [--title TEXT]``."""
    parser = argparse.ArgumentParser(
        prog='mae-dense report', description='the leaderboard rebuilt from a results store alone'
    )
    parser.add_argument(
        '--db', required=True, help='the results store (a pipeline writes <results_dir>/results.sqlite)'
    )
    parser.add_argument('--out', default='results', help='output directory (default: results)')
    parser.add_argument('--title', default='mae-dense leaderboard', help='the report title')
    args = parser.parse_args(argv)

    def _run() -> int:
        md = write_report(ResultStore(args.db, create=False), args.out, args.title)
        print(f'report: {md} (+ leaderboard.json, leaderboard.html)')
        return 0

    return run_tool(_run)

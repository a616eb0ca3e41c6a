"""``mae-dense report --db FILE [--out DIR]``: the leaderboard rebuilt from a results store alone.

Runs from different pipelines, machines and weeks that wrote to the same store appear in one leaderboard
(``leaderboard.md``, ``.json``, ``.html`` and the figures).
"""

from __future__ import annotations

import argparse

from .common import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mae-dense report', description=__doc__.splitlines()[0])
    parser.add_argument(
        '--db', required=True, help='the results store (a pipeline writes <results_dir>/results.sqlite)'
    )
    parser.add_argument('--out', default='results', help='output directory (default: results)')
    parser.add_argument('--title', default='mae-dense leaderboard', help='the report title')
    args = parser.parse_args(argv)

    def _run() -> int:
        from ..suite.report import write_report
        from ..suite.store import ResultStore

        md = write_report(ResultStore(args.db, create=False), args.out, args.title)
        print(f'report: {md} (+ leaderboard.json, leaderboard.html)')
        return 0

    return run_tool(_run)


if __name__ == '__main__':
    raise SystemExit(main())

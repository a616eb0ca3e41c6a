"""The ``mae-dense`` console script (also ``python -m mae_dense``): ``mae-dense COMMAND ...``."""

from __future__ import annotations

import sys

# command -> ('module:function' taking argv, help); the modules are imported only when their command runs.
# The single-run tools live in mae_dense.cli; the suite's commands above them, in mae_dense.suite.
COMMANDS = {
    'pipeline': (
        'mae_dense.suite.commands:pipeline_main',
        'backbones x tasks x seeds -> results store -> leaderboard (--dry-run: plan only)',
    ),
    'report': (
        'mae_dense.suite.commands:report_main',
        'rebuild the leaderboard from a results store (--db FILE)',
    ),
    'train': ('mae_dense.cli.train:main', 'train a config (as tools/train.py)'),
    'test': ('mae_dense.cli.test:main', 'test a checkpoint (as tools/test.py)'),
    'probe': ('mae_dense.cli.probe:main', 'frozen-backbone linear probe on ADE20K (as tools/probe.py)'),
    'convert': ('mae_dense.cli.convert:main', 'convert a checkpoint between layouts'),
    'configs': ('mae_dense.cli.configs:main', 'list the shipped configs (task, published number)'),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(
            'usage: mae-dense {'
            + ','.join(COMMANDS)
            + '} ...\n'
            + '\n'.join(f'  {k:<9} {v[1]}' for k, v in COMMANDS.items()),
            file=sys.stderr,
        )
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    import importlib

    module, function = COMMANDS[argv[0]][0].split(':')
    return getattr(importlib.import_module(module), function)(argv[1:])


if __name__ == '__main__':
    sys.exit(main())

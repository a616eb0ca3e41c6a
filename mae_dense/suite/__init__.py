"""The suite: many backbones x tasks x seeds, scheduled over GPUs or Slurm, kept in a results store.

* :mod:`.spec` reads and checks a pipeline config (backbones, tasks, seeds, launcher) before anything runs;
* :mod:`.recipe` records what a run really does (batch, lr from the built optimizer, config hash, versions);
* :mod:`.launch` turns a stage into a command (``python -m mae_dense.cli.*``, torchrun, ``srun``);
* :mod:`.schedule` runs independent cells concurrently over the visible GPUs;
* :mod:`.cells` runs one pretraining stage or one (backbone, task, seed) cell, resumably;
* :mod:`.store` is the SQLite results store every finished cell goes to;
* :mod:`.tables`, :mod:`.figures`, :mod:`.html` and :mod:`.report` build the leaderboard from the store.

Plain Python, sqlite3 and matplotlib; mmengine is imported only where a config must be read.
"""

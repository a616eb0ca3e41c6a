"""A one-node Slurm cluster on localhost for the tests: Debian's ``slurm-wlm`` and ``munge``, CPU only.

:func:`start_cluster` writes a private ``slurm.conf`` (2 CPUs, one ``debug`` partition, no cgroups, no
accounting database) and a munge key under one directory, starts ``munged``, ``slurmctld`` and ``slurmd``
there (as root, daemonised with pid files) and waits until ``sinfo`` shows the node idle. Clients find the
cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`). It is idempotent: daemons of an earlier call that
are still alive are reused, and :meth:`SlurmCluster.stop` ends only the daemons this call started.

Nothing here needs the system's own ``/etc/slurm`` or ``/etc/munge``, so a machine with a real Slurm keeps
it untouched (the ports are the cluster's own, see :data:`PORTS`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PORTS = (16817, 16818)  # slurmctld, slurmd: not Slurm's defaults, so a system Slurm is not disturbed
NODE = 'localhost'
PARTITION = 'debug'
_DAEMONS = ('munged', 'slurmctld', 'slurmd')
_PACKAGES = ('slurm-wlm', 'munge')

SLURM_CONF = """\
ClusterName=maedense
SlurmctldHost={node}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running one-node cluster: its directory, ``slurm.conf`` and the daemons this process started."""

    root: Path
    started: dict[str, int] = field(default_factory=dict)  # daemon -> pid, only those started here

    @property
    def conf(self) -> Path:
        return self.root / 'slurm.conf'

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, the pipeline) needs in its environment to talk to this cluster."""
        return {'SLURM_CONF': str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> str:
        """A Slurm client command against this cluster; its stdout."""
        r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60)
        if check and r.returncode:
            raise RuntimeError(f'{" ".join(argv)} failed ({r.returncode}): {r.stderr.strip()}')
        return r.stdout

    def stop(self) -> None:
        """End the daemons this call started (by their pid), newest first; reused ones keep running."""
        for name in reversed(_DAEMONS):
            pid = self.started.pop(name, None)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                _wait(lambda p=pid: not _alive(p), 30, f'{name} (pid {pid}) to stop')


def unavailable() -> str | None:
    """Why this machine cannot run the cluster (None: it can): the packages are installed here with apt
    when missing; only a machine without root or without apt (or its package index) cannot."""
    if all(shutil.which(d) for d in _DAEMONS):
        return None
    if os.geteuid() != 0:
        return f'slurm-wlm/munge are not installed and this user is not root (apt-get install {" ".join(_PACKAGES)})'
    if not shutil.which('apt-get'):
        return 'slurm-wlm/munge are not installed and there is no apt-get to install them'
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    r = subprocess.run(
        ['apt-get', 'install', '-y', '-qq', *_PACKAGES], capture_output=True, text=True, env=env
    )
    if r.returncode:
        subprocess.run(['apt-get', 'update', '-qq'], capture_output=True, env=env)
        r = subprocess.run(
            ['apt-get', 'install', '-y', '-qq', *_PACKAGES], capture_output=True, text=True, env=env
        )
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ['no output'])[-1]
        return f'apt-get install {" ".join(_PACKAGES)} failed (no package index or no network?): {last}'
    return None


def start_cluster(root: Path) -> SlurmCluster:
    """Start (or reuse) the cluster in ``root``; it is ready when ``sinfo`` shows the node idle."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = SlurmCluster(root)
    for sub in ('state', 'spool'):
        (root / sub).mkdir(exist_ok=True)
    text = SLURM_CONF.format(root=root, node=NODE, partition=PARTITION, ctld_port=PORTS[0], d_port=PORTS[1])
    if not cluster.conf.is_file() or cluster.conf.read_text() != text:
        cluster.conf.write_text(text)
    (root / 'plugstack.conf').touch()
    key = root / 'munge.key'
    if not key.is_file():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    try:
        _daemon(
            cluster,
            'munged',
            [
                'munged',
                '--force',
                f'--socket={root}/munge.socket',
                f'--key-file={key}',
                f'--pid-file={root}/munged.pid',
                f'--log-file={root}/munged.log',
                f'--seed-file={root}/munged.seed',
            ],
        )
        _daemon(cluster, 'slurmctld', ['slurmctld', '-f', str(cluster.conf)])
        _daemon(cluster, 'slurmd', ['slurmd', '-f', str(cluster.conf), '-N', NODE])
        _wait(lambda: _idle(cluster), 60, f'node {NODE} to be idle in sinfo (logs in {root})')
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _idle(cluster: SlurmCluster) -> bool:
    state = cluster.run('sinfo', '-h', '-N', '-o', '%t', check=False).strip()
    if state.startswith(('down', 'drain', 'unk')) and (cluster.root / 'slurmctld.pid').is_file():
        cluster.run('scontrol', 'update', f'nodename={NODE}', 'state=resume', check=False)
    return state in ('idle', 'mix', 'alloc')


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not reaped) is not alive
        return Path(f'/proc/{pid}/stat').read_text().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def _daemon(cluster: SlurmCluster, name: str, argv: list[str]) -> None:
    """Start ``name`` unless its pid file names a live process; it daemonises and writes its pid file."""
    pid_file = cluster.root / f'{name}.pid'
    if _pid(pid_file) is not None:
        return
    pid_file.unlink(missing_ok=True)
    r = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, 'SLURM_CONF': str(cluster.conf)}
    )
    if r.returncode:
        raise RuntimeError(f'{name} did not start ({r.returncode}): {(r.stderr or r.stdout).strip()}')
    _wait(lambda: _pid(pid_file) is not None, 30, f'{name} to write {pid_file}')
    cluster.started[name] = _pid(pid_file)


def _wait(ready, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f'timed out after {seconds:.0f} s waiting for {what}')
        time.sleep(0.5)

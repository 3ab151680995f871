#!/usr/bin/env python3
"""A single-node SLURM cluster on localhost, for the tests (tests/test_slurm.py) and by hand.

    python scripts/local_slurm.py start DIR   # writes DIR/slurm.conf, starts munged, slurmctld,
                                              # slurmd; prints `export SLURM_CONF=DIR/slurm.conf`
    eval "$(python scripts/local_slurm.py env DIR)"; sbatch ...; squeue
    python scripts/local_slurm.py stop DIR    # cancels the cluster's jobs, stops the daemons

Debian's slurm-wlm and munge (``apt-get install -y slurm-wlm munge``, done here when they are
missing and this is root with apt, as on CI). Everything lives in DIR: the configuration, a munge
key and socket of its own, the controller's state, slurmd's spool, the logs and the daemons' pid
files; ports are picked free at start, so several clusters (two test sessions) can run side by
side and none touches the machine's own /etc/slurm or /etc/munge. The daemons run as root (they
must: slurmd starts jobs as their users). ``stop`` ends them by the pids in their pid files, each
checked against /proc to be the daemon it names.

The cluster: one node (this host, 127.0.0.1) with the CPUs ``nproc`` counts and no GPUs;
select/cons_tres (CPUs are consumable, so two 1-CPU jobs run side by side on 2 cores),
proctrack/linuxproc and task/none (no cgroups, so it runs in a container), JobRequeue=1.
Two partitions: ``low`` (the default; preemptible: PreemptMode=REQUEUE, GraceTime) and ``high``
(PriorityTier above low's), with PreemptType=preempt/partition_prio: a job in ``high`` that needs
the CPUs of a ``low`` job requeues it (``scontrol update PartitionName=low GraceTime=N`` changes
the grace time; SLURM 22.05: with GraceTime 0 the job is requeued at once and its processes get
SIGTERM, then SIGKILL after KillWait; with GraceTime > 0 they get SIGTERM while the job still
runs, and a job that ends within its grace time ends with its own exit code, e.g. FAILED, and
is not requeued unless it requeues itself). Without slurmdbd there is no ``sacct``: finished jobs stay
in ``scontrol show job`` for MinJobAge (an hour), and every end of a job (a requeue included) is
a line of DIR/jobcomp.txt (jobcomp/filetxt). A requeued job waits out SLURM's requeue delay
(BeginTime about two minutes ahead); ``scontrol update JobId=ID StartTime=now+2`` skips it
(``now`` can start it within the second of its kill, which slurmd refuses: the job FAILs).
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo", "scancel")
GRACE_TIME = 30  # seconds a preempted job has between SIGTERM and SIGKILL
KILL_WAIT = 30   # seconds between SIGTERM and SIGKILL when a job is cancelled or times out
START_TIMEOUT = 120.0  # seconds for the node to come up idle
STOP_TIMEOUT = 60.0    # seconds for the cluster's jobs, then each daemon, to end
# The daemons in the order they start (stop: the reverse), each with its pid file in DIR and
# the program its /proc/PID/exe must be.
DAEMONS = (("munged", "munge/munged.pid"), ("slurmctld", "slurmctld.pid"),
           ("slurmd", "slurmd.pid"))


class ClusterError(RuntimeError):
    """The cluster could not be set up, started or stopped (the message says why)."""


# -- installation ---------------------------------------------------------------------------------

def missing_programs() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [p for p in PROGRAMS if shutil.which(p, path=path) is None]


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt when a program is missing (root with apt only)."""
    missing = missing_programs()
    if not missing:
        return
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise ClusterError(
            f"SLURM is not installed ({', '.join(missing)} missing) and cannot be installed here "
            f"({'not root' if os.geteuid() != 0 else 'no apt-get'}): "
            f"run `apt-get install -y {' '.join(PACKAGES)}` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(command)} failed (exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-2000:]}")
    if missing_programs():
        raise ClusterError(f"still missing after apt-get install: {', '.join(missing_programs())}")


def _program(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise ClusterError(f"{name} is not installed (apt-get install -y {' '.join(PACKAGES)})")
    return found


# -- configuration --------------------------------------------------------------------------------

def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_name() -> str:
    return socket.gethostname().split(".")[0]


def write_config(root: Path) -> Path:
    """DIR/slurm.conf, DIR/cgroup.conf and the directories they name; the slurm.conf path."""
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o755)  # munged wants its socket's directory searchable by all
    ctld_port, slurmd_port = _free_ports(2)
    cpus = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    node = node_name()
    cluster = f"ag{os.getpid()}"  # lower case, short: slurmctld checks it against its state
    conf = root / "slurm.conf"
    conf.write_text(f"""\
# A one-node cluster on localhost for autogrow's tests (scripts/local_slurm.py).
ClusterName={cluster}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobRequeue=1
ReturnToService=2
# finished jobs stay in `scontrol show job` for an hour (no slurmdbd, so no sacct)
MinJobAge=3600
KillWait={KILL_WAIT}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=low Nodes={node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime={GRACE_TIME}
PartitionName=high Nodes={node} MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
""")
    # Not used by proctrack/linuxproc and task/none; slurmd reads it if present anyway.
    (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
    return conf


def env(root: Path) -> dict[str, str]:
    """What a shell needs to use the cluster: SLURM_CONF."""
    return {"SLURM_CONF": str(root / "slurm.conf")}


# -- daemons --------------------------------------------------------------------------------------

def _pid(root: Path, pid_file: str) -> int | None:
    try:
        return int((root / pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_daemon(pid: int, program: str) -> bool:
    """Whether ``pid`` is alive and runs ``program`` (a pid file may outlive its process)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    name = os.path.basename(exe).removesuffix(" (deleted)")
    return name == program or name.startswith(program + "-")  # Debian: /usr/sbin/slurmd-wlm


def _wait(what: str, predicate, timeout: float, detail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not within {timeout:g} s{detail()}")
        time.sleep(0.1)


def _run(command: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, env=dict(os.environ, **env(root)), capture_output=True,
                          text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(command)} failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _log_tail(root: Path, name: str) -> str:
    path = root / "log" / name if name != "munged.log" else root / "munge" / name
    try:
        return f"\n--- {path} (tail) ---\n" + "\n".join(path.read_text().splitlines()[-15:])
    except OSError:
        return f"\n(no {path})"


def start(root: Path) -> dict[str, str]:
    """Configure and start the cluster in ``root``; returns its environment once the node is
    idle. The daemons daemonize and write their pid files into ``root``. A second try, on other
    ports, when the first fails (a port picked free may have been taken before the daemon
    bound it)."""
    ensure_installed()
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if any(_pid(root, f) and _is_daemon(_pid(root, f), p) for p, f in DAEMONS):
        raise ClusterError(f"a cluster already runs in {root} (stop it first)")
    try:
        return _start(root)
    except ClusterError as first:
        for sub in ("state", "spool"):
            shutil.rmtree(root / sub, ignore_errors=True)
        try:
            return _start(root)
        except ClusterError as second:
            raise ClusterError(f"{second}\n(first try: {first})") from second


def _start(root: Path) -> dict[str, str]:
    conf = write_config(root)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    daemon_env = dict(os.environ, SLURM_CONF=str(conf))
    started = []
    try:
        subprocess.run([_program("munged"), "--force", f"--key-file={key}",
                        f"--socket={root}/munge/munge.socket",
                        f"--pid-file={root}/munge/munged.pid",
                        f"--log-file={root}/munge/munged.log",
                        f"--seed-file={root}/munge/munged.seed"],
                       env=daemon_env, check=True, capture_output=True, text=True, timeout=60)
        started.append("munged")
        subprocess.run([_program("slurmctld"), "-f", str(conf)], env=daemon_env, check=True,
                       capture_output=True, text=True, timeout=60)
        started.append("slurmctld")
        subprocess.run([_program("slurmd"), "-f", str(conf), "-N", node_name()], env=daemon_env,
                       check=True, capture_output=True, text=True, timeout=60)
        started.append("slurmd")
        for program, pid_file in DAEMONS:
            _wait(f"{program} did not write {root / pid_file}",
                  lambda: bool(_pid(root, pid_file)) and _is_daemon(_pid(root, pid_file), program),
                  START_TIMEOUT, lambda p=program: _log_tail(root, f"{p}.log"))

        def idle() -> bool:
            proc = _run(["sinfo", "-h", "-N", "-o", "%T"], root, check=False)
            # one line per partition the node is in
            return proc.returncode == 0 and set(proc.stdout.split()) == {"idle"}

        _wait("the node did not come up idle", idle, START_TIMEOUT,
              lambda: _log_tail(root, "slurmctld.log") + _log_tail(root, "slurmd.log"))
    except (subprocess.CalledProcessError, ClusterError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", "") or ""
        stop(root, quiet=True)
        raise ClusterError(f"starting the local SLURM cluster in {root} failed after starting "
                           f"{started or 'nothing'}: {exc}\n{out}") from exc
    return env(root)


def _jobs(root: Path, states: str) -> list[str]:
    proc = _run(["squeue", "-h", "-t", states, "-o", "%i"], root, check=False)
    return proc.stdout.split() if proc.returncode == 0 else []


def stop(root: Path, quiet: bool = False) -> list[str]:
    """Cancel the cluster's jobs (their processes end by SLURM's own kill sequence), then stop
    slurmd, slurmctld and munged by their pids; the daemons stopped."""
    root = root.resolve()
    stopped = []
    ctld = _pid(root, "slurmctld.pid")
    if ctld and _is_daemon(ctld, "slurmctld") and (root / "slurm.conf").exists():
        jobs = _jobs(root, "all")
        if jobs:
            _run(["scancel", "--quiet", *jobs], root, check=False)
            try:  # SIGTERM, KillWait, SIGKILL: the jobs' processes end before slurmd does
                _wait("the cluster's jobs did not end", lambda: not _jobs(
                    root, "RUNNING,COMPLETING,SUSPENDED,CONFIGURING,STOPPED"),
                      KILL_WAIT + STOP_TIMEOUT)
            except ClusterError as exc:
                if not quiet:
                    print(f"local_slurm: {exc}", file=sys.stderr)
    for program, pid_file in reversed(DAEMONS):
        pid = _pid(root, pid_file)
        if not pid or not _is_daemon(pid, program):
            continue
        os.kill(pid, signal.SIGTERM)
        try:
            _wait(f"{program} (pid {pid}) did not end after SIGTERM",
                  lambda p=pid, n=program: not _is_daemon(p, n), STOP_TIMEOUT)
        except ClusterError:
            if _is_daemon(pid, program):
                os.kill(pid, signal.SIGKILL)
        stopped.append(f"{program} ({pid})")
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("install", "start", "stop", "env"))
    parser.add_argument("dir", type=Path, nargs="?", help="the cluster's directory")
    args = parser.parse_args(argv)
    try:
        if args.action == "install":
            ensure_installed()
            return 0
        if args.dir is None:
            parser.error(f"{args.action} needs the cluster's directory")
        if args.action == "start":
            for key, value in start(args.dir).items():
                print(f"export {key}={value}")
        elif args.action == "env":
            for key, value in env(args.dir.resolve()).items():
                print(f"export {key}={value}")
        else:
            stopped = stop(args.dir)
            print("stopped " + (", ".join(stopped) if stopped else "nothing (no daemon ran)"),
                  file=sys.stderr)
    except ClusterError as exc:
        print(f"local_slurm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""cluster.yaml's head node, started on this machine the way `ray up` starts it: its file_mounts
placed under a stand-in home directory, then its head start commands, read from the file. Only what
needs a cloud or would touch other Ray clusters on this machine is changed: `ray stop` is not run (it
stops every Ray process here; the test stops its own by process id), the autoscaler's config (written
by `ray up`) is left out, and ports, temp dir and dashboard host are this test's own. The user's
first job then goes to it as the docs say: `ray job submit --working-dir . --runtime-env
configs/runtime_env.yaml -- python jobs/stage2.py ...`."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from small_stages import write_small_stages

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e

CLUSTER = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
RAY = str(Path(sys.executable).parent / "ray")
# Options of the file's `ray start` that this test sets itself.
OWN_OPTIONS = ("--port", "--autoscaling-config", "--dashboard-host", "--dashboard-port", "--temp-dir", "--num-cpus")


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def local_start_command(command: str, temp_dir: str, ports: list[int]) -> str:
    """One head start command as this machine runs it: this environment's `ray`, this test's options."""
    tokens, kept, skip = shlex.split(command), [], False
    for token in tokens:
        if skip:
            skip = False
        elif token.split("=", 1)[0] in OWN_OPTIONS:
            skip = "=" not in token  # `--port 6379`: drop the value too
        else:
            kept.append(RAY if token.endswith("/bin/ray") or token == "ray" else token)
    gcs, dashboard, agent, agent_grpc, runtime_env, metrics, client = ports
    own = [
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=2",  # a tiny stage 2: its worker, a decode actor and Ray Data's file listing
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}",
    ]
    return shlex.join(kept + own)


def sync_home_file_mounts(laptop: Path, head: Path) -> None:
    """What `ray up` copies into the head's home directory from the machine it runs on (the other
    mounts are the repository, which this checkout stands in for)."""
    for remote, local in CLUSTER.get("file_mounts", {}).items():
        if not remote.startswith("~/"):
            continue
        source = laptop / local.removeprefix("~/") if local.startswith("~/") else REPO_ROOT / local
        target = head / remote.removeprefix("~/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)


def started_here(process: psutil.Process, temp_dir: str, home: str) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(temp_dir in part for part in process.cmdline()) or process.environ().get("HOME") == home
    return False


def stop_processes_of(temp_dir: str, home: str) -> None:
    """The head's processes, by process id: those whose command line names its temp dir or that run
    with its home directory (the client server names neither), and their children (the dashboard and
    runtime-env agents rename themselves). Other Ray clusters on this machine are left alone."""
    roots = [p for p in psutil.process_iter() if p.pid != os.getpid() and started_here(p, temp_dir, home)]
    processes = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes |= {child.pid: child for child in root.children(recursive=True)}
    for process in processes.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(processes.values()), timeout=15)


def run(command: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def submit_when_ready(command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while a just-started head's job agent is not up yet."""
    deadline = time.monotonic() + 60
    while True:
        done = run(command, env, timeout)
        if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(2)


def test_cluster_yaml_head_start_commands_bring_up_a_head_that_takes_jobs_with_the_token(tmp_path, ray_local):
    # ray_local: the shards are prepared on the session's embedded Ray, not on the head under test
    (tmp_path / "small").mkdir()
    write_small_stages(tmp_path / "small")
    laptop, head = tmp_path / "laptop", tmp_path / "head"  # the home directories of `ray up`'s machine and the head
    laptop.mkdir()
    head.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    clean["PATH"] = f"{Path(sys.executable).parent}:{clean.get('PATH', '')}"
    client = clean | {"HOME": str(laptop), "RAY_AUTH_MODE": "token"}
    # The step cluster.yaml's header asks for before `ray up`: the token, on the user's machine.
    generated = run([RAY, "get-auth-token", "--generate"], clean | {"HOME": str(laptop)})
    assert generated.returncode == 0, generated.stderr
    sync_home_file_mounts(laptop, head)

    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths live under it
    ports = free_ports(7)
    commands = [c for c in CLUSTER["head_start_ray_commands"] if "ray stop" not in c]
    assert any("ray start --head" in " ".join(c.split()) for c in commands)
    try:
        for command in commands:
            started = subprocess.run(
                ["bash", "-c", local_start_command(command, temp_dir, ports)],
                env=clean | {"HOME": str(head)},
                cwd=head,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert started.returncode == 0, f"{command}\n{started.stdout[-2000:]}\n{started.stderr[-3000:]}"
        address = f"http://127.0.0.1:{ports[1]}"
        probe = "import ray; ray.init(); print('cluster CPUs', ray.cluster_resources()['CPU'])"
        job = submit_when_ready([RAY, "job", "submit", "--address", address, "--", "python", "-c", probe], client)
        # The repository uploaded as the job's working directory, its mqt_llava imported from there.
        stage2 = [
            *("--config", "tiny/stage2", "--storage", str(tmp_path / "runs")),
            *("--set", f"data={tmp_path / 'small' / '665k'}", "--set", "init_from=null"),
            *("--set", "max_steps=2", "--set", "checkpoint_every=2"),
            *(f"--set=model.{part}.pretrained=null" for part in ("tokenizer", "vision_tower", "llm")),
        ]
        upload = ["--working-dir", ".", "--runtime-env", "configs/runtime_env.yaml"]
        # From a machine without the token file, with the token in RAY_AUTH_TOKEN (docs/install.md's way).
        token = (laptop / ".ray" / "auth_token").read_text().strip()
        elsewhere = clean | {"HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        trained = submit_when_ready(
            [RAY, "job", "submit", "--address", address, *upload, "--", "python", "jobs/stage2.py", *stage2], elsewhere
        )
        refused = run([RAY, "job", "list", "--address", address], client | {"RAY_AUTH_TOKEN": "0" * 64})
    finally:
        stop_processes_of(temp_dir, str(head))
        shutil.rmtree(temp_dir, ignore_errors=True)
    # The job's driver joined the cluster with the head's token (ray.init() inside the job).
    assert job.returncode == 0 and "cluster CPUs 2.0" in job.stdout, job.stdout[-3000:] + job.stderr[-2000:]
    assert trained.returncode == 0, trained.stdout[-4000:] + trained.stderr[-2000:]
    assert "[tiny-stage2] done: step 2" in trained.stdout and "succeeded" in trained.stdout
    assert (tmp_path / "runs" / "tiny-stage2" / "export" / "model.safetensors").exists()
    assert refused.returncode != 0 and "token is invalid" in refused.stdout + refused.stderr

"""Multi-GPU without a launcher script: `--gpus N` (N > 1) re-runs the very
same looper command under `accelerate launch --num_processes N`; the child
processes see LOOPER_LAUNCHED=1 and train (DDP, or FSDP/DeepSpeed when
`--accelerate-config FILE` says so) instead of launching again.

Multi-node: set the usual variables on every node and run the same command:
NNODES (machines), NODE_RANK (this machine, 0..NNODES-1), MASTER_ADDR and
MASTER_PORT (rank 0's address). `--gpus` is GPUs per machine. An
accelerate config file that sets them wins over the variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from looper_cli.errors import UserError

LAUNCHED_ENV = "LOOPER_LAUNCHED"


def in_launched_child() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1"


def maybe_relaunch(gpus: Optional[int], accelerate_config: Optional[Path]) -> None:
    """Relaunch under accelerate when more than one GPU is asked for and we
    are not already a launched child; exits with the children's status."""
    if in_launched_child() or gpus is None:
        return
    if gpus == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # --gpus 0: train on the CPU even on a GPU machine
        return
    from looper_cli.gpus import check_gpus

    check_gpus(gpus)
    if gpus == 1:
        return
    command = launch_command(gpus, accelerate_config, sys.argv[1:])
    env = {**os.environ, LAUNCHED_ENV: "1"}
    # The children print their own errors; pass their exit status on as is.
    raise SystemExit(subprocess.call(command, env=env))


def launch_command(gpus: int, accelerate_config: Optional[Path], argv: Sequence[str]) -> list[str]:
    """`python -m accelerate.commands.launch ... -m looper_cli ARGV`."""
    nodes = int(os.environ.get("NNODES", "1"))
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:
        if not Path(accelerate_config).is_file():
            raise UserError(f"accelerate config file not found: {accelerate_config}")
        command += ["--config_file", str(accelerate_config)]
    else:
        command += ["--multi_gpu", "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    command += ["--num_processes", str(gpus * nodes)]
    if nodes > 1:
        command += ["--num_machines", str(nodes),
                    "--machine_rank", os.environ.get("NODE_RANK", "0"),
                    "--main_process_ip", _need_env("MASTER_ADDR"),
                    "--main_process_port", os.environ.get("MASTER_PORT", "29500")]
    return command + ["-m", "looper_cli", *argv]


def _need_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise UserError(f"multi-node runs (NNODES > 1) need {name} set on every node")
    return value

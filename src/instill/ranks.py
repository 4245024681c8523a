"""Which process this is under torchrun / accelerate launch, and waits that hold no device collective.

torchrun and `accelerate launch` start the processes and set RANK, LOCAL_RANK, WORLD_SIZE; a plain
`instill train` is rank 0 of 1 and everything here is a no-op for it. `start()` opens the process
group once, with `ddp_timeout` (on the CPU the Trainer would open it without one), plus a second,
gloo-only group with a long timeout used by `main_first()`: rank 0 tokenizes or converts while the
others wait on that host-side barrier, never on an NCCL/HCCL collective that `ddp_timeout` would
kill (LLaMA-Factory users hit that: hiyouga/LLaMA-Factory #2902, #2424, #5558).

Written here rather than taken from accelerate: accelerate's `main_process_first` waits on the
default (device) group and its `PartialState` is reset by every `TrainingArguments`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

# A wait for preprocessing (tokenizing a large dataset, converting a GGUF, a hub download) may take hours.
PREP_TIMEOUT_S = 6 * 3600

_host_group = None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 of all nodes: the one process that writes outputs, logs, trackers and the report."""
    return rank() == 0


def is_local_main() -> bool:
    """Local rank 0: the one process per machine that fills machine-local caches."""
    return local_rank() == 0


def accelerator_type() -> str:
    """The accelerator accelerate would pick here (mps, npu, cuda, xpu), else cpu. Importing torch_npu for the probe."""
    import torch
    from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

    if is_mps_available():
        return "mps"
    if is_npu_available():  # before CUDA: torch_npu's transfer_to_npu makes torch.cuda answer for NPUs
        return "npu"
    if torch.cuda.is_available():
        return "cuda"
    return "xpu" if is_xpu_available() else "cpu"


def start(ddp_timeout_s: int) -> None:
    """Open the process group (gloo on CPU, the accelerator's backend otherwise) once, with `ddp_timeout_s`,
    and the gloo host group for `main_first`. A no-op for a single process."""
    global _host_group
    if world_size() <= 1:
        return
    import torch.distributed as dist
    from accelerate import PartialState

    if not dist.is_initialized():
        PartialState(cpu=accelerator_type() == "cpu", timeout=timedelta(seconds=ddp_timeout_s))
    if _host_group is None:
        # Every rank creates it, in the same order (new_group is itself collective).
        _host_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=max(PREP_TIMEOUT_S, ddp_timeout_s)))


def host_barrier() -> None:
    """Wait for every rank on the gloo host group (opening it with defaults if `start` was not called)."""
    if world_size() <= 1:
        return
    if _host_group is None:
        start(1800)
    import torch.distributed as dist

    dist.barrier(group=_host_group)


@contextmanager
def main_first(local: bool = True) -> Iterator[bool]:
    """The main process (per machine with `local`, else rank 0) runs the block first; the others run it after
    it finished (they then find its cache). Yields whether this process is the one going first."""
    first = is_local_main() if local else is_main()
    if not first:
        host_barrier()
    try:
        yield first
    finally:
        if first:
            host_barrier()


def broadcast_error(message: str | None) -> str | None:
    """Rank 0's error message (None: no error) on every rank, over the host group; so that a check only rank 0
    can make (the output_dir lock) stops every rank with the same line instead of leaving them waiting."""
    if world_size() <= 1:
        return message
    if _host_group is None:
        start(1800)
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0, group=_host_group)
    return box[0]

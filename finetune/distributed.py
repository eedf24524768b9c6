"""Data-parallel QLoRA across processes with accelerate: DDP, gloo on CPU, NCCL on CUDA.

Training with N processes keeps the one-process recipe: every process walks the same seeded
micro-batches, takes its share of each (rank r: examples r, r+N, ...), and divides its summed
loss by the answer tokens of the whole optimizer step, so the gradients DDP sums are the
one-process gradient (up to float reduction order). Only the main process writes.

Started by a launcher (``accelerate launch``, torchrun: they set ``WORLD_SIZE``), a process
joins the group through accelerate's :class:`~accelerate.PartialState`; otherwise every helper
here is the identity, no process group or accelerate state is created, and training computes
exactly as it did before this module existed.

    accelerate launch --multi_gpu --num_processes 2 -m text2emoji.cli train --trait openness
    text2emoji train --trait openness --num-processes 2    # launches the line above itself
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch

from text2emoji.core.errors import UserError

T = TypeVar("T")


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """True in a lone process and in the main process of a launched group."""
    if not launched():
        return True
    from accelerate import PartialState

    return PartialState().is_main_process


class Ranks:
    """This process's place among the training processes and the few collectives training needs.

    Args:
        device: the model's device setting (``cpu``, ``cuda``, ``cuda:N``, ``auto``): CPU
            processes talk over gloo, CUDA ones over NCCL, one GPU per process.

    In a lone process ``rank`` is 0, ``world`` 1 and every method is the identity.
    """

    def __init__(self, device: str = "auto"):
        from interp.models import pick_device

        self.cpu = pick_device(device).type == "cpu"
        self.rank, self.world, self.local_rank = 0, 1, 0
        self._state: Any = None
        self._accelerator: Any = None
        if launched():
            from accelerate import PartialState

            if sharded := [k for k in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{k}", "").lower() == "true"]:
                # a model sharded across processes needs the optimizer built after wrapping and
                # gathered state dicts to save: not this trainer's (see configs/accelerate/README.md)
                raise UserError(f"launched with {sharded[0]}, but text2emoji train trains data-parallel (DDP) "
                                "only; launch with --multi_gpu or configs/accelerate/ddp.yaml")

            # cpu=True: without it accelerate would find no GPU and fall back to one process
            self._state = PartialState(cpu=self.cpu)
            self.rank, self.world = self._state.process_index, self._state.num_processes
            self.local_rank = self._state.local_process_index

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """The device this process trains on: with several CUDA processes, its own GPU
        (``cuda:<local rank>``); otherwise ``device`` unchanged."""
        if self.world == 1 or self.cpu:
            return device
        if device not in ("auto", "cuda"):
            raise UserError(f"device: {device} with {self.world} processes; give cuda or auto (each process "
                            "takes the GPU of its local rank)")
        return f"cuda:{self.local_rank}"

    def shard(self, batch: Sequence[T]) -> list[T]:
        """This process's examples of a micro-batch: ``batch[rank::world]`` (a batch of 8 on two
        processes is 4 + 4; one shorter than ``world`` leaves some processes none)."""
        return list(batch[self.rank :: self.world])

    def prepare(self, model: Any) -> Any:
        """``model`` wrapped in DDP by accelerate (itself in a lone process).

        DDP's defaults fit: only the LoRA parameters require grad and every one of them takes
        part in every forward, so it needs no search for unused parameters
        (``find_unused_parameters=False``); the frozen nf4 base is never all-reduced.
        """
        if self.world == 1:
            return model
        from accelerate import Accelerator

        # mixed_precision="no": the compute dtype is the config's (compute_dtype), not a launcher's
        self._accelerator = Accelerator(cpu=self.cpu, mixed_precision="no")
        return self._accelerator.prepare_model(model)

    def no_sync(self, model: Any) -> contextlib.AbstractContextManager:
        """Backward without DDP's gradient all-reduce (every micro-batch of a step but the last)."""
        return self._accelerator.no_sync(model) if self._accelerator is not None else contextlib.nullcontext()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes (a copy on every process)."""
        if self.world == 1:
            return values
        from accelerate.utils import reduce

        return reduce(values, reduction="sum")

    def gather(self, obj: T) -> list[T]:
        """Each process's ``obj``, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def broadcast(self, obj: T) -> T:
        """The main process's ``obj`` on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj])[0]

    def wait(self) -> None:
        """Block until every process gets here."""
        if self._state is not None:
            self._state.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (e.g. writes a file), then the others (read it)."""
        if self._state is None:
            yield
            return
        with self._state.main_process_first():
            yield

    def seed(self, seed: int) -> None:
        """A different, deterministic random stream on each process (dropout masks): seed + rank."""
        if self.world > 1:
            from accelerate.utils import set_seed

            set_seed(seed + self.rank)  # as its device_specific=True, without an AcceleratorState


def launch(num_processes: int, module: str, args: Sequence[str], device: str = "auto") -> None:
    """Run ``python -m module *args`` in ``num_processes`` processes through accelerate's launcher
    (torchrun underneath) and wait for them.

    On CPU the launcher's ``--multi_gpu`` mode is still the one that starts several processes
    (its ``--cpu`` mode starts one unless MPI is installed); the processes find no GPU, and
    :class:`Ranks` joins them over gloo. Each CPU process gets an equal share of the cores.

    Raises:
        UserError: more CUDA processes than GPUs, or a process failed (its error is above).
    """
    from interp.models import pick_device

    cpu = pick_device(device).type == "cpu"
    if not cpu and num_processes > torch.cuda.device_count():
        raise UserError(f"num_processes: {num_processes} processes on CUDA need as many GPUs; "
                        f"{torch.cuda.device_count()} visible")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0"]  # 0: a free port, so that two runs on one machine do not collide
    if cpu:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cmd += ["--num_cpu_threads_per_process", str(max(1, cores // num_processes))]
    cmd += ["-m", module, *args]
    code = subprocess.run(cmd, check=False).returncode
    if code != 0:
        raise UserError(f"training in {num_processes} processes failed (exit status {code}); "
                        "the processes' own error lines are above")

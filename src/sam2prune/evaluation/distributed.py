"""Evaluation runs spread over Ray workers (the ``ray`` extra): the same protocol, the same run
folders and the same files as the serial run, written by the same function
(``protocol.evaluate_sequence``), one task per (run, sequence).

Each worker is a Ray actor holding its resources (``RayConfig.threads_per_worker`` CPUs,
``gpus_per_worker`` GPUs) and one model, built on its first sequence from weights that the
driver read once and put into Ray's object store (workers on other machines need no copy of
the checkpoint). The driver hands a sequence to each worker that is free, retries a sequence
that fails (``max_retries``), replaces a worker that dies, and collects the records; a failed
sequence is reported by name without stopping the others. Workers write into the run folder
themselves, atomically, so on a cluster of several machines the run folder and the dataset
must be on a filesystem that every node mounts at the same path.

Results equal the serial run's: the same code runs on each sequence, a model is built the same
way (random weights are seeded), and nothing random carries over from one video to the next.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import threading
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.config import ProtocolConfig, PruningConfig, RayConfig
from sam2prune.errors import SIGTERM_RECEIVED, InputError, UserError, WorkerFailed
from sam2prune.process_memory import usable_cores
from sam2prune.progress import progress as progress_bar
from sam2prune.wording import amount, counted

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence
    from sam2prune.evaluation.protocol import SequenceRecord

log = logging.getLogger("sam2prune")

INSTALL_HINT = "pip install 'sam2prune[ray]'"


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        InputError: Ray is not installed (naming the extra to install).
    """
    try:
        import ray
    except ImportError:
        raise InputError(f"--workers and --ray-address run on Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class RunSpec:
    """One evaluation run of a distributed batch (a sweep has several).

    Attributes:
        out_dir: its run folder, prepared (``protocol.prepare_run_dir``), absolute.
        pruning: its pruning; None: unpruned SAM 2.
        label: how messages name it (a sweep's run label); empty for a single run.
    """

    out_dir: Path
    pruning: PruningConfig | None
    label: str = ""


@dataclass(frozen=True)
class WorkerModel:
    """The model every worker builds (``build_predictor``'s arguments besides the weights).

    Attributes:
        model: model name, or SAM 2 YAML by the name a serial run gives it (its path as typed,
            normalised: what aligner and router files must have been made for).
        image_size: input size; None: the model's.
        device: ``cpu`` or ``cuda`` (each worker sees the GPUs Ray gives it as ``cuda:0``...).
        seed: seed of random weights.
        bounded_memory: each video's tracking state keeps only what later frames read.
        bf16: track under bfloat16 autocast (CUDA).
        static_step: how pruned predictors run steady-state frames (``set_static_step``).
    """

    model: str
    image_size: int | None
    device: str
    seed: int = 0
    bounded_memory: bool = True
    bf16: bool = False
    static_step: str = "off"
    model_file: str | None = None  # the YAML by absolute path (workers may run in other folders)


@dataclass(frozen=True)
class SequenceFailure:
    """A sequence that failed on every attempt."""

    run: str  # the run's label ("" for a single run)
    sequence: str
    error: str  # one line
    attempts: int

    def __str__(self) -> str:
        where = f"{self.run}/{self.sequence}" if self.run else self.sequence
        return f"{where}: {self.error}"


@dataclass
class DistributedResult:
    """What a distributed batch produced.

    Attributes:
        records: per run (in ``runs`` order), the records of its finished sequences, in
            sequence order (those finished before, on resume, included).
        failures: the sequences that failed on every attempt.
    """

    records: list[list[SequenceRecord]]
    failures: list[SequenceFailure] = field(default_factory=list)

    def complete(self, run_index: int, sequence_count: int) -> bool:
        return len(self.records[run_index]) == sequence_count


class WorkerSetupError(Exception):
    """A worker could not build its model or reach the run folder: nothing would run anywhere,
    so the driver stops the batch with this message instead of failing every sequence."""

    def __init__(self, message: str, user_error: bool, details: str = "") -> None:
        """``details``: the worker's traceback, for the driver's debug log (-v)."""
        super().__init__(message, user_error, details)
        self.message, self.user_error, self.details = message, user_error, details

    def __str__(self) -> str:
        return self.message


class SequenceWorker:
    """A Ray actor (``ray.remote(SequenceWorker)``): one model, built on the first sequence the
    worker runs, then reused; a sweep's pruned settings switch the one pruned model's config
    (``set_pruning``) as ``with_pruning`` would build it."""

    def __init__(self, model: WorkerModel, weights: list | None, threads: int) -> None:
        """``weights``: ``[ObjectRef, file]`` of the state dict (in a list, so that Ray does not
        fetch it before a model is built) and the checkpoint file it was read from (named in
        messages), or None for random weights."""
        import torch

        torch.set_num_threads(threads)
        self.model, self.weights = model, weights
        self._baseline = None
        self._pruned = None
        self._checked_dirs: set[Path] = set()

    def ready(self) -> str:
        """Where the worker runs (the driver hands out work once a worker answers this)."""
        return socket.gethostname()

    def _build(self, pruning: PruningConfig | None) -> Any:
        import ray

        from sam2prune.models import build_predictor

        predictor = build_predictor(
            self.model.model_file or self.model.model,
            model_name=self.model.model,
            checkpoint=ray.get(self.weights[0]) if self.weights is not None else None,
            random_weights=self.weights is None,
            checkpoint_source=self.weights[1] if self.weights is not None else None,
            seed=self.model.seed,
            device=self.model.device,
            image_size=self.model.image_size,
            pruning=pruning,
        )
        if pruning is not None:
            predictor.set_static_step(self.model.static_step)
        return predictor

    def _predictor(self, pruning: PruningConfig | None) -> Any:
        if pruning is None:
            if self._baseline is None:
                self._baseline = self._build(None)
            return self._baseline
        if self._pruned is None:
            self._pruned = self._build(pruning)
        elif self._pruned.pruning != pruning:
            self._pruned.set_pruning(pruning)
        return self._pruned

    def run(
        self, out_dir: Path, sequence: Sequence, protocol: ProtocolConfig, pruning: PruningConfig | None
    ) -> SequenceRecord:
        """Run the protocol on one sequence and write it into ``out_dir`` (``evaluate_sequence``).

        Raises:
            WorkerSetupError: the model cannot be built, or the run folder is not on this node.
        """
        import torch

        from sam2prune.evaluation.protocol import evaluate_sequence

        if out_dir not in self._checked_dirs:
            if not (out_dir / "run.json").is_file():
                raise WorkerSetupError(
                    f"the run folder {out_dir} is not visible on the Ray node {socket.gethostname()}: on a "
                    "cluster of several machines, --out and --root must be on a filesystem every node "
                    "mounts at the same path",
                    user_error=True,
                )
            self._checked_dirs.add(out_dir)
        try:
            predictor = self._predictor(pruning)
        except UserError as error:
            raise WorkerSetupError(str(error), user_error=True) from None
        except Exception as error:
            raise WorkerSetupError(
                f"building the model failed on {socket.gethostname()}: {one_line(error)}",
                user_error=False,
                details=traceback.format_exc(),
            ) from None
        return evaluate_sequence(
            predictor,
            sequence,
            out_dir,
            protocol=protocol,
            device=torch.device(predictor.device),
            bounded_memory=self.model.bounded_memory,
            bf16=self.model.bf16,
        )


def one_line(error: BaseException) -> str:
    """An error as one line: the message of ours, type and first line of anything else."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, UserError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(frozen=True)
class Node:
    """What one machine of a Ray cluster offers its workers."""

    cpus: float
    gpus: float

    def __str__(self) -> str:
        return amount(self.cpus, "CPU") + (f" and {amount(self.gpus, 'GPU')}" if self.gpus else "")

    def slots(self, threads: int, gpus_per_worker: float) -> int:
        """How many workers of ``threads`` CPUs and ``gpus_per_worker`` GPUs Ray places here: a
        worker is never split across machines, and a fraction of a GPU is a fraction of one GPU."""
        fits = int(self.cpus / threads + 1e-9)
        if gpus_per_worker > 0:
            if gpus_per_worker <= 1:
                fits = min(fits, int(self.gpus + 1e-9) * int(1 / gpus_per_worker + 1e-9))
            else:
                fits = min(fits, int(self.gpus / gpus_per_worker + 1e-9))
        return fits


@dataclass(frozen=True)
class WorkerPlan:
    """The workers a command runs on a cluster: device, CPU threads and GPUs each, and how many."""

    device: str
    threads: int
    gpus_per_worker: float
    workers: int


def plan_workers(config: RayConfig, *, device: str, nodes: list[Node], local: bool, where: str) -> WorkerPlan:
    """The workers of ``config`` on a cluster of ``nodes``; each must fit on one machine.

    Args:
        device: the model option (``auto``: CUDA when the cluster has GPUs and GPUs per worker
            are not 0).
        local: a local cluster started for the command (its CPUs are divided among the workers
            by default; a worker on an existing cluster takes 1).
        where: how messages name the cluster.

    Raises:
        InputError: the device or the shape cannot run there, naming the options.
    """
    cpus, gpus = sum(node.cpus for node in nodes), sum(node.gpus for node in nodes)
    chosen = device == "auto"
    if chosen:
        device = "cuda" if gpus > 0 and config.gpus_per_worker != 0 else "cpu"
    if device.startswith("cuda:"):
        raise InputError(
            f"--device {device} on Ray: Ray gives each worker its GPUs, which it sees as cuda:0...; pass --device cuda"
        )
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device} on Ray: expected cpu, cuda or auto")
    if device == "cpu" and config.gpus_per_worker:
        if chosen:
            raise InputError(f"--gpus-per-worker has no effect: {where} has no GPU, so its workers run on the CPU")
        raise InputError("--gpus-per-worker has no effect with --device cpu; remove it or pass --device cuda")
    gpus_per_worker = float(
        config.gpus_per_worker if config.gpus_per_worker is not None else (1 if device == "cuda" else 0)
    )
    if device == "cuda" and gpus_per_worker == 0:
        raise InputError("--device cuda with --gpus-per-worker 0: a worker without a GPU cannot run on CUDA")
    if config.threads_per_worker is not None:
        threads = config.threads_per_worker
    elif local and config.workers is not None:
        threads = max(1, int(cpus) // config.workers)
    else:
        threads = 1
    machines = "; ".join(f"{counted(count, 'machine')} of {node}" for node, count in collections.Counter(nodes).items())
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        needs = (
            f"each worker needs {gpus_per_worker:g} (--gpus-per-worker)"
            if config.gpus_per_worker is not None
            else f"--device {device} gives each worker 1 GPU; pass --device cpu, or join a cluster with GPUs"
        )
        raise InputError(f"{where} has {amount(gpus, 'GPU')}, and {needs}")
    fits = sum(node.slots(threads, gpus_per_worker) for node in nodes)
    shape = f"{counted(threads, 'CPU')}" + (f" and {amount(gpus_per_worker, 'GPU')}" if gpus_per_worker else "")
    if fits < 1:
        raise InputError(
            f"no machine of {where} ({machines}) fits one worker of {shape} (--threads-per-worker, --gpus-per-worker): "
            "a worker runs on one machine"
        )
    if config.workers is not None and config.workers > fits:
        # more actors than fit would wait for resources that never come, holding sequences
        share = ""
        if gpus_per_worker > 0:
            per_gpu = -(-config.workers // max(1, int(gpus + 1e-9)))  # workers on each GPU, rounded up
            for fraction in (1 / k for k in range(per_gpu, 101)):
                if sum(node.slots(threads, fraction) for node in nodes) >= config.workers:
                    share = f"; --gpus-per-worker {fraction:.3g} would share the GPUs"
                    break
        raise InputError(
            f"{where} ({machines}) fits {counted(fits, 'worker')} of {shape}; --workers {config.workers} is too "
            f"many{share}"
        )
    return WorkerPlan(device, threads, gpus_per_worker, config.workers if config.workers is not None else fits)


def _cluster_nodes(ray: Any) -> list[Node]:
    """The alive machines of the cluster ``ray`` is connected to, with their CPUs and GPUs."""
    try:
        nodes = [
            Node(float(node["Resources"].get("CPU", 0)), float(node["Resources"].get("GPU", 0)))
            for node in ray.nodes()
            if node.get("Alive")
        ]
    except Exception:  # ray.nodes is a developer API: the totals, as if on one machine
        nodes = []
    if not nodes:
        resources = ray.cluster_resources()
        nodes = [Node(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))]
    return nodes


class RayCluster:
    """A connection to a Ray cluster for one command, with the workers it runs
    (``plan_workers``): see ``connect``."""

    def __init__(self, config: RayConfig, *, device: str, started: bool, local: bool, address: str | None) -> None:
        ray = import_ray()
        self.config, self.started, self.address = config, started, address
        where = f"the Ray cluster at {address}" if address else "the local Ray cluster"
        plan = plan_workers(config, device=device, nodes=_cluster_nodes(ray), local=local, where=where)
        self.device, self.threads = plan.device, plan.threads
        self.gpus_per_worker, self.workers = plan.gpus_per_worker, plan.workers

    @property
    def device_label(self) -> str:
        """The device as a run's settings record it: what the model reports on a worker (Ray
        makes a worker's GPU its ``cuda:0``), as in a serial run on ``cuda``."""
        from sam2prune.models import device_label

        return device_label(self.device)

    def evaluate(
        self,
        runs: list[RunSpec],
        sequences: list[Sequence],
        *,
        model: WorkerModel,
        checkpoint: Path | None,
        protocol: ProtocolConfig,
        progress: bool = True,
        state_dict: dict | None = None,
    ) -> DistributedResult:
        """Run the protocol on every sequence of every run that is not finished yet in its run
        folder, on the cluster's workers, one task per (run, sequence).

        Args:
            runs: the runs, their folders prepared.
            sequences: the same sequences for every run.
            model: what each worker builds.
            checkpoint: read here once and shipped to the workers; None: random weights.
            state_dict: ``checkpoint`` already read (``read_checkpoint``), e.g. before the run
                folders were prepared.

        Raises:
            UserError: a worker cannot build the model or see the run folder (nothing runs).
            WorkerFailed: a worker fails to build the model for another reason.
        """
        ray = import_ray()
        batch = _Batch(runs, sequences, max_retries=self.config.max_retries)
        if batch.todo:
            bar = progress_bar(total=len(batch.todo), desc="evaluating", unit="sequence", disable=not progress)
            try:
                self._run(ray, batch, bar, model=model, checkpoint=checkpoint, protocol=protocol, state_dict=state_dict)
            finally:
                bar.close()
        return batch.result()

    def _run(
        self,
        ray: Any,
        batch: _Batch,
        bar: Any,
        *,
        model: WorkerModel,
        checkpoint: Path | None,
        protocol: ProtocolConfig,
        state_dict: dict | None,
    ) -> None:
        """Hand the batch's tasks to workers as they become free, until none is left."""
        from sam2prune.models import read_checkpoint

        if checkpoint is not None and state_dict is None:
            state_dict = read_checkpoint(checkpoint, model=model.model)
        weights = [ray.put(state_dict), str(checkpoint)] if checkpoint is not None else None
        worker_class = ray.remote(SequenceWorker).options(
            num_cpus=self.threads, num_gpus=self.gpus_per_worker, max_restarts=0, max_task_retries=0
        )
        workers = min(self.workers, len(batch.todo))
        log.info(
            "Ray: %s of %s%s on %s, %s to run",
            counted(workers, "worker"),
            counted(self.threads, "CPU thread"),
            f" and {amount(self.gpus_per_worker, 'GPU')}" if self.gpus_per_worker else "",
            self.address or "a local cluster",
            counted(len(batch.todo), "sequence"),
        )
        # object ref -> (its worker, its task; None for the worker's ready() call)
        in_flight: dict[Any, tuple[Any, Task | None]] = {}
        idle: list[Any] = []
        actors: list[Any] = []

        def start_worker() -> None:
            actor = worker_class.remote(model, weights, self.threads)
            actors.append(actor)
            in_flight[actor.ready.remote()] = (actor, None)

        answered = False  # a worker has started, or the wait for one was said
        try:
            for _ in range(workers):
                start_worker()
            while batch.todo or any(task is not None for _, task in in_flight.values()):
                while idle and batch.todo:
                    handed = batch.todo.popleft()
                    actor = idle.pop()
                    run = batch.runs[handed[0]]
                    ref = actor.run.remote(run.out_dir, batch.sequences[handed[1]], protocol, run.pruning)
                    in_flight[ref] = (actor, handed)
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=None if answered else WORKER_START_WAIT_S)
                if not done:  # no worker has started yet (each waits for its CPUs and GPUs)
                    answered = True
                    log.warning("%s", self._no_worker_message(ray))
                    continue
                [ref] = done
                answered = True
                actor, task = in_flight.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause
                    if isinstance(cause, WorkerSetupError):
                        if cause.user_error:
                            raise InputError(cause.message) from None
                        log.debug("the worker's traceback:\n%s", cause.details)
                        raise WorkerFailed(f"{cause.message}; -v shows the worker's traceback") from None
                    if task is None:  # ready() does not raise
                        raise
                    log.debug("%s", error)
                    batch.failed(task, one_line(cause if cause is not None else error), bar)
                    if isinstance(cause, UserError):  # the data's fault (a bad annotation): the worker is sound
                        idle.append(actor)
                    else:
                        # anything else may have broken the process for good (a CUDA error poisons
                        # its context): the retry and the rest go to a fresh one
                        actors.remove(actor)
                        ray.kill(actor)
                        start_worker()
                except ray.exceptions.RayError as error:
                    log.debug("%s", "".join(traceback.format_exception_only(error)))
                    actors.remove(actor)
                    ray.kill(actor)
                    if task is None:
                        # it never started: a node without sam2prune, or an error in its setup
                        raise InputError(
                            f"a Ray worker could not start ({one_line(error)}); every node of the cluster needs "
                            "sam2prune and its dependencies installed"
                        ) from None
                    # the worker died (killed, out of memory, its node lost): replace it
                    start_worker()
                    batch.failed(task, f"its Ray worker died ({type(error).__name__})", bar)
                else:
                    if task is not None:
                        batch.finished(task, value, bar)
                    idle.append(actor)
        finally:
            for actor in actors:
                ray.kill(actor)

    def _no_worker_message(self, ray: Any) -> str:
        """What a batch waits for when no worker has started within ``WORKER_START_WAIT_S``."""
        shape = counted(self.threads, "CPU") + (
            f" and {amount(self.gpus_per_worker, 'GPU')}" if self.gpus_per_worker else ""
        )
        try:
            available = ray.available_resources()
            free = f"; free now: {amount(available.get('CPU', 0), 'CPU')}" + (
                f" and {amount(available.get('GPU', 0), 'GPU')}" if self.gpus_per_worker else ""
            )
        except Exception:  # a developer API that may change: the message without it
            free = ""
        return (
            f"no Ray worker has started after {WORKER_START_WAIT_S:.0f} s: each needs {shape} on one node{free}; "
            f"other jobs on {self.address or 'the local cluster'} may hold them (still waiting; Ctrl-C stops)"
        )


# seconds a batch waits for its first worker before saying what it waits for
WORKER_START_WAIT_S = 60.0

Task = tuple[int, int]  # (run index, sequence index)


class _Batch:
    """The driver's account of a batch: what is left to run, what finished, what failed."""

    def __init__(self, runs: list[RunSpec], sequences: list[Sequence], *, max_retries: int) -> None:
        from sam2prune.evaluation.protocol import load_record

        self.runs, self.sequences, self.max_retries = runs, sequences, max_retries
        self.todo: deque[Task] = deque()
        self.done: list[dict[str, SequenceRecord]] = []  # per run: sequence name -> record
        self.attempts: dict[Task, int] = {}
        self.failures: list[SequenceFailure] = []
        for run_index, run in enumerate(runs):
            finished = {}
            for sequence_index, sequence in enumerate(sequences):
                record = load_record(run.out_dir, sequence.name)
                if record is None:
                    self.todo.append((run_index, sequence_index))
                else:
                    finished[sequence.name] = record
            self.done.append(finished)

    def _name(self, task: Task) -> str:
        run, sequence = self.runs[task[0]], self.sequences[task[1]]
        return f"{run.label}/{sequence.name}" if run.label else sequence.name

    def finished(self, task: Task, record: SequenceRecord, bar: Any) -> None:
        """Keep a record; show the run's J&F over its sequences so far."""
        from sam2prune.evaluation.davis import global_measures

        run_index = task[0]
        self.done[run_index][record.name] = record
        scores = [score for r in self.done[run_index].values() for score in r.object_scores()]
        label = f"{self.runs[run_index].label}: " if self.runs[run_index].label else ""
        if scores:  # none while every object so far had no frame to score
            running = global_measures(scores)["J&F-Mean"]
            bar.set_postfix_str(f"{label}J&F {running:.3f} over {counted(len(self.done[run_index]), 'sequence')}")
        bar.update(1)

    def failed(self, task: Task, reason: str, bar: Any) -> None:
        """Count a failed attempt; queue the task again (last) or record it as failed."""
        self.attempts[task] = self.attempts.get(task, 0) + 1
        if self.attempts[task] <= self.max_retries:
            log.warning("%s failed (%s); trying again", self._name(task), reason)
            self.todo.append(task)
            return
        log.warning("%s failed (%s)", self._name(task), reason)
        run, sequence = self.runs[task[0]], self.sequences[task[1]]
        self.failures.append(SequenceFailure(run.label, sequence.name, reason, self.attempts[task]))
        bar.update(1)

    def result(self) -> DistributedResult:
        records = [[done[s.name] for s in self.sequences if s.name in done] for done in self.done]
        return DistributedResult(records=records, failures=self.failures)


def _check_reachable(address: str, shown: str) -> None:
    """Fail at once, in one line, where ``ray.init`` would retry an unreachable address for
    minutes, logging every try; ``shown``: the address as messages name it (and where from).

    Raises:
        InputError: ``address`` is not HOST:PORT, or nothing answers there.
    """
    if address == "auto" or "://" in address:  # the local cluster's file, or a Ray client address
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"Ray address {shown}: expected HOST:PORT (what `ray start --head` prints), ray://HOST:PORT or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        raise InputError(
            f"cannot reach the Ray cluster at {shown} ({error.strerror or error}); is `ray start --head` running there?"
        ) from None


@contextmanager
def connect(config: RayConfig, *, device: str) -> Iterator[RayCluster]:
    """Join the Ray cluster ``config`` names (``ray_address``, else ``RAY_ADDRESS``), or start
    a local one with ``workers`` x ``threads_per_worker`` CPUs (and this machine's GPUs on
    CUDA) for the duration of the block; a Ray already initialised in this process (``ray.init``
    by the caller) is used as it is. Ray's own logging is kept to errors, its workers' output
    to its log files, and no dashboard is started.

    Args:
        device: the model option (``auto``: CUDA when the cluster has GPUs).

    Raises:
        InputError: Ray is not installed, the cluster cannot be reached, or it cannot run one
            worker of the asked shape.
    """
    ray = import_ray()
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    started = local = False
    address = config.ray_address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        address = None
    elif address is not None:
        shown = repr(address) if config.ray_address else f"{address!r} (RAY_ADDRESS)"
        _check_reachable(address, shown)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            hint = (
                "; if the cluster uses token authentication (`ray start` enables it in recent Ray), set "
                "RAY_AUTH_MODE=token here, with the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                if os.environ.get("RAY_AUTH_MODE") is None
                else ""
            )
            raise InputError(f"cannot join the Ray cluster at {shown}: {one_line(error)}{hint}") from None
        started = True
    else:
        if config.workers is None:  # RayConfig.enabled: ray_address or workers
            raise InputError("--workers N: how many workers the local Ray cluster runs")
        threads = config.threads_per_worker or max(1, usable_cores() // config.workers)
        gpus = 0
        if device in ("auto", "cuda") or device.startswith("cuda:"):
            import torch

            gpus = torch.cuda.device_count()
        ray.init(
            address="local",
            num_cpus=config.workers * threads,
            num_gpus=gpus,
            include_dashboard=False,
            **quiet,
        )
        started = local = True
    try:
        with _sigterm_exits():
            yield RayCluster(config, device=device, started=started, local=local, address=address)
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM while the driver runs (on the main thread): SystemExit(SIGTERM), as Ray's own
    handler does, after setting ``SIGTERM_RECEIVED``. Ray turns an exit raised inside its waits
    into SystemExit(1), and another exception there is dropped (the driver would go on): the
    event tells the CLI it was terminated. A second SIGTERM is ignored while Ray shuts down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum: int, frame: object) -> None:
        SIGTERM_RECEIVED.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is exit_on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

"""How many Ray workers of which shape a cluster runs (``distributed.plan_workers``), from its
machines' CPUs and GPUs, without a cluster: a worker runs on one machine, and one that no machine
can hold would wait for ever."""

from __future__ import annotations

import pytest

from sam2prune.config import RayConfig
from sam2prune.errors import InputError
from sam2prune.evaluation.distributed import Node, plan_workers

WHERE = "the Ray cluster at head:6379"
# the README's recipe: a head without GPUs, two GPU machines of 8 CPUs and one GPU each
HEAD_AND_TWO_GPU_MACHINES = [Node(8, 0), Node(8, 1), Node(8, 1)]


def plan(nodes, *, device="auto", local=False, **config):
    return plan_workers(RayConfig(**config), device=device, nodes=nodes, local=local, where=WHERE)


def test_a_joined_cluster_gives_each_worker_one_thread_and_counts_what_one_machine_holds():
    # the cluster's 24 CPUs were divided among the workers: 2 workers of 12 CPUs and a GPU, which
    # no machine holds, waited for ever
    shape = plan(HEAD_AND_TWO_GPU_MACHINES, device="cuda", workers=2)
    assert (shape.device, shape.threads, shape.gpus_per_worker, shape.workers) == ("cuda", 1, 1.0, 2)
    assert plan(HEAD_AND_TWO_GPU_MACHINES, device="cuda", threads_per_worker=8).workers == 2
    with pytest.raises(InputError, match=r"fits 2 workers of 8 CPUs and 1 GPU; --workers 3 is too many"):
        plan(HEAD_AND_TWO_GPU_MACHINES, device="cuda", workers=3, threads_per_worker=8)
    # two 1-CPU machines: 2 workers of 1 CPU, not 1 of 2
    assert plan([Node(1, 0), Node(1, 0)], workers=1).threads == 1
    with pytest.raises(InputError, match=r"no machine of .* \(2 machines of 1 CPU\) fits one worker of 2 CPUs"):
        plan([Node(1, 0), Node(1, 0)], workers=1, threads_per_worker=2)
    with pytest.raises(InputError, match=r"no machine .* fits one worker of 1 CPU and 2 GPUs"):
        plan(HEAD_AND_TWO_GPU_MACHINES, gpus_per_worker=2)


def test_a_local_cluster_divides_its_cores_among_the_workers():
    assert plan([Node(8, 0)], local=True, workers=2).threads == 4
    assert plan([Node(8, 0)], local=True).workers == 8  # without --workers: as many as fit, of 1 thread


def test_fractions_of_a_gpu_are_placed_within_one_gpu():
    # 3 workers on 2 GPUs: 0.67 of a GPU each fits one per GPU; the suggestion must fit
    with pytest.raises(InputError, match=r"--workers 3 is too many; --gpus-per-worker 0.5 would share the GPUs"):
        plan([Node(16, 2)], device="cuda", workers=3)
    with pytest.raises(InputError, match=r"fits 2 workers .* --workers 3 is too many"):
        plan([Node(16, 2)], device="cuda", workers=3, gpus_per_worker=0.67)
    assert plan([Node(16, 2)], device="cuda", workers=3, gpus_per_worker=0.5).workers == 3
    # 5 workers of 0.4: two per GPU, so 4 fit
    with pytest.raises(InputError, match=r"fits 4 workers of 1 CPU and 0.4 GPUs; --workers 5 is too many"):
        plan([Node(16, 2)], device="cuda", workers=5, gpus_per_worker=0.4)


def test_the_device_left_to_the_cluster():
    assert plan(HEAD_AND_TWO_GPU_MACHINES).device == "cuda"
    # no GPUs per worker: CPU workers, on a cluster with GPUs too
    assert plan(HEAD_AND_TWO_GPU_MACHINES, gpus_per_worker=0).device == "cpu"
    with pytest.raises(InputError, match="--device cuda with --gpus-per-worker 0"):
        plan(HEAD_AND_TWO_GPU_MACHINES, device="cuda", gpus_per_worker=0)
    with pytest.raises(InputError, match="has no GPU, so its workers run on the CPU"):
        plan([Node(8, 0)], gpus_per_worker=0.5)
    # --device cuda on a cluster without GPUs: the option given is named, not one left to its default
    with pytest.raises(InputError, match=r"has 0 GPUs, and --device cuda gives each worker 1 GPU; pass --device cpu"):
        plan([Node(8, 0)], device="cuda")

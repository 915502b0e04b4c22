"""`eval` and `sweep` on Ray workers: the same files as the serial run, byte for byte; a failing
sequence retried, then reported while the others finish; an interrupted run resumed. One local
Ray cluster of 2 CPUs for the module, workers of 1 thread, the chair clip under several names."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (the ray extra: pip install -e '.[ray]'; CI installs it, so these run there)"
)


from sam2prune.cli import main
from sam2prune.config import ProtocolConfig, RayConfig
from sam2prune.data.datasets import read_davis
from sam2prune.errors import InputError
from sam2prune.evaluation import distributed
from sam2prune.evaluation import protocol as evaluate
from sam2prune.evaluation.protocol import EvalSettings, prepare_run_dir

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE, snapshot

# all on one pytest-xdist worker (scripts/check.sh: --dist loadgroup): one cluster, not one per worker
pytestmark = pytest.mark.xdist_group("ray")

NAMES = ("chair", "chair_b", "chair_c")
RAY = ["--workers", "2", "--threads-per-worker", "1"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """A local cluster of 2 CPUs for the whole module; `eval --workers` uses it as it is."""
    # "local": a new cluster, never one `ray start` left running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Serial runs with the workers' thread count: how a float sum is split among threads
    changes its last bits, and so a pixel here and there."""
    torch.set_num_threads(1)


def _davis_root(tmp_path: Path, names=NAMES) -> Path:
    root = tmp_path / "DAVIS"
    for name in names:
        shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / name)
        shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def _cli(command: str, root: Path, out: Path, *extra: str, rounds: int = 0) -> int:
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights", "--max-rounds", str(rounds)]
    return main([command, "--dataset", "davis", "--root", str(root), "--out", str(out), *tiny, *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_results(serial: Path, distributed_run: Path) -> None:
    """Masks and CSVs byte for byte; kept tokens and per-frame scores equal; the same settings."""
    masks = _files(serial / "masks")
    assert masks and masks == _files(distributed_run / "masks")
    for csv in ("global_results-val.csv", "per-sequence_results-val.csv"):
        assert (serial / csv).read_bytes() == (distributed_run / csv).read_bytes()
    assert json.loads((serial / "run.json").read_text()) == json.loads((distributed_run / "run.json").read_text())
    for record in sorted((serial / "sequences").glob("*.json")):
        a, b = json.loads(record.read_text()), json.loads((distributed_run / "sequences" / record.name).read_text())
        assert (a["j"], a["f"], a["clicks"], a["refinement_rounds"]) == (
            b["j"],
            b["f"],
            b["clicks"],
            b["refinement_rounds"],
        )
        with (
            np.load(record.with_suffix(".kept.npz")) as kept_a,
            np.load(distributed_run / "sequences" / f"{record.stem}.kept.npz") as kept_b,
        ):
            assert kept_a.files == kept_b.files
            assert all(np.array_equal(kept_a[key], kept_b[key]) for key in kept_a.files)


def test_eval_on_ray_writes_what_the_serial_run_writes(tmp_path, one_thread, monkeypatch, capsys):
    root = _davis_root(tmp_path)
    # a refinement round: corrective clicks from the masks, tracking again
    assert _cli("eval", root, tmp_path / "serial", rounds=1) == 0
    assert _cli("eval", root, tmp_path / "ray", *RAY, rounds=1) == 0
    _assert_same_results(tmp_path / "serial", tmp_path / "ray")
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["overall"]["sequences"] == 3
    err = capsys.readouterr().err
    assert "Ray: 2 workers of 1 CPU thread on" in err and "evaluating: 3/3 sequences" in err and "J&F" in err
    assert "Traceback" not in err

    # a serial run resumes the Ray run's folder: the same settings, nothing left to track
    def tracked(self):
        raise AssertionError(f"{self.sequence.name} was tracked again")

    monkeypatch.setattr(evaluate.SequenceTracker, "run", tracked)
    assert _cli("eval", root, tmp_path / "ray", rounds=1) == 0


def test_sweep_on_ray_writes_what_the_serial_sweep_writes(tmp_path, one_thread):
    root = _davis_root(tmp_path)
    # Monte-Carlo uncertainty draws random dropout masks: its results may not depend on which
    # sequences a worker ran before (nor on the order of the settings a worker switches between);
    # unpruned SAM 2 is a second model on each worker; the pruned runs take the static step
    grid = ["--retention", "0.5", "0.25", "--signals", "uncertainty,prior", "--uncertainty", "mc", "--mc-passes", "2"]
    grid += ["--static-step", "buffers"]
    assert _cli("sweep", root, tmp_path / "serial", *grid) == 0
    assert _cli("sweep", root, tmp_path / "ray", *grid, *RAY) == 0
    labels = sorted(p.name for p in (tmp_path / "serial").iterdir() if p.is_dir())
    assert labels == ["pruned_r0.25_router_T2", "pruned_r0.5_router_T2", "sam2"]
    assert labels == sorted(p.name for p in (tmp_path / "ray").iterdir() if p.is_dir())
    for label in labels:
        _assert_same_results(tmp_path / "serial" / label, tmp_path / "ray" / label)
        settings = json.loads((tmp_path / "ray" / label / "run.json").read_text())
        assert settings["static_step"] == ("off" if label == "sam2" else "buffers")
    assert "| davis | SAM 2 (sam2.1_hiera_t) |" in (tmp_path / "ray" / "report.md").read_text()


def test_a_sweep_on_ray_checks_every_setting_before_the_first_is_touched(tmp_path, capsys):
    """--overwrite deleted the first settings' runs before a later folder was refused; a later
    setting's missing file was found once the settings before it had run."""
    root = _davis_root(tmp_path, names=("chair",))
    out = tmp_path / "ray"
    grid = ["--retention", "0.5", "--scorer", "prior"]
    assert _cli("sweep", root, out, *grid, *RAY) == 0
    (out / "pruned_r0.5_prior" / "masks" / "notes.txt").write_text("mine")  # in the last setting's folder
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert _cli("sweep", root, out, *grid, *RAY, "--overwrite") == 2
    assert "masks/notes.txt, which the run did not write" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # sam2's run and report.md stay
    missing = tmp_path / "missing.pt"
    later = ["--scorers", "prior", "router", "--router", "learned", "--router-weights", str(missing)]
    assert _cli("sweep", root, tmp_path / "late", "--retention", "0.5", *later, *RAY) == 2
    assert f"--router-weights {missing}: file does not exist" in capsys.readouterr().err
    assert not (tmp_path / "late").exists()


def _break_annotation(root: Path, name: str) -> Path:
    """Frame 3's annotation of ``name`` cut short (its header whole, so the checks before the
    run pass): the sequence fails when it is scored."""
    path = root / "Annotations" / "480p" / name / "00003.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_a_failing_sequence_is_retried_then_reported_while_the_others_finish(tmp_path, capsys):
    root = _davis_root(tmp_path)
    broken = _break_annotation(root, "chair_b")
    out = tmp_path / "run"
    assert _cli("eval", root, out, *RAY, "--max-retries", "1") == 1
    err = capsys.readouterr().err
    assert err.count("chair_b failed") == 2 and err.count("trying again") == 1  # tried twice, then given up
    assert "1 of 3 sequences failed (2 attempts each)" in err
    assert f"  chair_b: mask {broken} cannot be read: image file is truncated" in err
    assert "Traceback" not in err
    # the others are saved; the failed one left nothing; no report of an incomplete run
    assert sorted(p.name for p in (out / "sequences").glob("*.json")) == ["chair.json", "chair_c.json"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["chair", "chair_c"]
    assert not (out / "report.json").exists()

    # fixed, the same command runs only the failed sequence
    shutil.copy(CHAIR_MASKS / "00003.png", root / "Annotations" / "480p" / "chair_b" / "00003.png")
    before = {p.name: p.read_bytes() for p in (out / "sequences").glob("*.json")}
    assert _cli("eval", root, out, *RAY, "--max-retries", "1") == 0
    assert {name: (out / "sequences" / name).read_bytes() for name in before} == before
    assert json.loads((out / "report.json").read_text())["overall"]["sequences"] == 3


def test_a_sequence_that_fails_once_succeeds_on_its_retry_also_when_its_worker_died(tmp_path):
    root = _davis_root(tmp_path, names=(*NAMES, "chair_d"))
    sequences = list(read_davis(root))
    real_loader = sequences[1].annotated[3]

    def once(marker: Path, failure):
        def load():  # runs on a worker: the marker file is what the attempts share
            if not marker.exists():
                marker.write_text("")
                failure()
            return real_loader()

        return load

    def flaky_disk():
        raise OSError("flaky disk")

    def unreadable():
        raise OSError("unreadable annotation")

    def worker_dies():
        os._exit(1)  # as a worker killed for memory

    sequences[1].annotated[3] = once(tmp_path / "failed-once", flaky_disk)
    sequences[2].annotated[3] = unreadable
    sequences[3].annotated[3] = once(tmp_path / "died-once", worker_dies)
    out = tmp_path / "run"
    settings = EvalSettings("davis", str(root), "val", "sam2", "sam2.1_hiera_t", None, TINY_SIZE, "cpu", None)
    prepare_run_dir(out, settings, overwrite=False)
    config = RayConfig(workers=2, threads_per_worker=1, max_retries=2)
    with distributed.connect(config, device="cpu") as cluster:
        result = cluster.evaluate(
            [distributed.RunSpec(out, None)],
            sequences,
            model=distributed.WorkerModel("sam2.1_hiera_t", TINY_SIZE, "cpu"),
            checkpoint=None,
            protocol=ProtocolConfig(max_rounds=0),
            progress=False,
        )
        # GPUs per worker, the device left to the cluster, which has none: said so
        no_gpu = "--gpus-per-worker has no effect: the local Ray cluster has no GPU"
        with (
            pytest.raises(InputError, match=no_gpu),
            distributed.connect(RayConfig(workers=1, gpus_per_worker=0.5), device="auto"),
        ):
            pass
    assert [r.name for r in result.records[0]] == ["chair", "chair_b", "chair_d"]
    assert [(f.sequence, f.error, f.attempts) for f in result.failures] == [
        ("chair_c", "OSError: unreadable annotation", 3)
    ]
    assert (tmp_path / "failed-once").exists() and (tmp_path / "died-once").exists()


def test_a_worker_whose_sequence_failed_for_no_fault_of_the_data_is_replaced(tmp_path):
    """A CUDA error poisons a worker's process: the retry, and every sequence after it, failed on
    the same worker. An error of the data's (a bad annotation) keeps the worker."""
    root = _davis_root(tmp_path, names=("chair",))
    (sequence,) = list(read_davis(root))
    real_loader = sequence.annotated[3]
    calls = tmp_path / "calls"

    def broken_process_once():  # runs on a worker: the file is what the attempts share
        with calls.open("a") as file:
            file.write(f"{os.getpid()}\n")
        if len(calls.read_text().split()) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_loader()

    sequence.annotated[3] = broken_process_once
    out = tmp_path / "run"
    settings = EvalSettings("davis", str(root), "val", "sam2", "sam2.1_hiera_t", None, TINY_SIZE, "cpu", None)
    prepare_run_dir(out, settings, overwrite=False)
    with distributed.connect(RayConfig(workers=1, threads_per_worker=1, max_retries=1), device="cpu") as cluster:
        result = cluster.evaluate(
            [distributed.RunSpec(out, None)],
            [sequence],
            model=distributed.WorkerModel("sam2.1_hiera_t", TINY_SIZE, "cpu"),
            checkpoint=None,
            protocol=ProtocolConfig(max_rounds=0),
            progress=False,
        )
    assert [r.name for r in result.records[0]] == ["chair"] and not result.failures
    first, *after = calls.read_text().split()  # the failed attempt, then the retry's reads
    assert after and first not in after  # another process


def test_an_interrupted_ray_run_resumes(tmp_path, monkeypatch):
    root = _davis_root(tmp_path, names=(*NAMES, "chair_d"))
    out = tmp_path / "run"
    original = distributed.progress_bar

    def interrupted_after_the_first_sequence(*args, **kwargs):
        bar = original(*args, **kwargs)

        def update(count=1):
            raise KeyboardInterrupt  # Ctrl-C while the other worker is tracking

        bar.update = update
        return bar

    with monkeypatch.context() as patch:
        patch.setattr(distributed, "progress_bar", interrupted_after_the_first_sequence)
        assert _cli("eval", root, out, *RAY) == 130
    finished = {p.stem for p in (out / "sequences").glob("*.json")}
    assert 1 <= len(finished) < 4
    # nothing half-written: every mask folder is whole (a killed worker's staging folder is hidden)
    for folder in (out / "masks").iterdir():
        if not folder.name.startswith("."):
            assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(6)]
    records_before = {name: (out / "sequences" / f"{name}.json").read_bytes() for name in finished}

    assert _cli("eval", root, out, *RAY) == 0
    assert {name: (out / "sequences" / f"{name}.json").read_bytes() for name in finished} == records_before
    assert json.loads((out / "report.json").read_text())["overall"]["sequences"] == 4
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["chair", "chair_b", "chair_c", "chair_d"]
    assert not [p for p in (out / "sequences").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_workers_checkpoint_that_does_not_fit_is_named_by_its_file(monkeypatch):
    # the worker builds from the state dict the driver read: its messages said '(state dict)'
    from sam2prune.errors import CheckpointError

    model = distributed.WorkerModel("sam2.1_hiera_t", TINY_SIZE, "cpu", 0, False, False, "off")
    worker = distributed.SequenceWorker(model, [{"not.a.sam2.key": torch.zeros(1)}, "weights/mine.pt"], threads=1)
    monkeypatch.setattr(ray, "get", lambda reference: reference)
    with pytest.raises(CheckpointError, match=r"checkpoint weights/mine\.pt does not fit model sam2\.1_hiera_t"):
        worker._build(None)


def test_workers_read_files_by_absolute_path_and_a_run_they_cannot_start_is_not_left(tmp_path, monkeypatch, capsys):
    """A relative --model YAML or --router-weights reached the workers as typed (on a cluster
    joined by address, their folder is another: 'does not exist'); and a run whose workers could
    not set up (a bad checkpoint, model, router file) left its run.json, which refused the
    corrected command as 'a run with other settings'."""
    import sam2

    from sam2prune.evaluation.distributed import RayCluster

    root = _davis_root(tmp_path, names=("chair",))
    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(sam2.__file__).parent / "configs" / "sam2.1" / "sam2.1_hiera_t.yaml", "t.yaml")
    Path("rw.pt").write_bytes(b"")  # the driver checks that it is a file; workers read it
    seen = []

    def workers_cannot_set_up(self, runs, sequences, *, model, checkpoint, protocol, progress=True, state_dict=None):
        seen.append((runs, model))
        raise InputError("router rw.pt does not exist")

    evaluate = RayCluster.evaluate
    monkeypatch.setattr(RayCluster, "evaluate", workers_cannot_set_up)
    learned = ["--router", "learned", "--router-weights", "rw.pt", "--model", "./t.yaml"]
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        assert _cli("eval", root, out, *learned, *RAY) == 2
        assert "router rw.pt does not exist" in capsys.readouterr().err
        if out.name == "new":
            assert not out.exists()
        else:
            assert list(out.iterdir()) == []  # the user's folder stays, as it was
    (runs, model), _ = seen
    assert runs[0].pruning.router_weights == str(tmp_path / "rw.pt") and model.model_file == str(tmp_path / "t.yaml")
    assert model.model == "t.yaml"  # the name a serial run gives it, which aligner and router files record
    # a run begun before stays as it is, resumable
    monkeypatch.setattr(RayCluster, "evaluate", evaluate)
    done = tmp_path / "done"
    assert _cli("eval", root, done, "--scorer", "prior", *RAY) == 0
    before = snapshot(done)
    monkeypatch.setattr(RayCluster, "evaluate", workers_cannot_set_up)
    assert _cli("eval", root, done, "--scorer", "prior", *RAY) == 2
    assert snapshot(done) == before
    # a checkpoint that cannot be read: refused before --overwrite deletes the run, as serially
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(range(256)) * 4)
    tiny = ["--image-size", str(TINY_SIZE), "--max-rounds", "0", "--scorer", "prior", "--overwrite"]
    command = ["eval", "--dataset", "davis", "--root", str(root), "--out", str(done), "--checkpoint", str(bad)]
    assert main([*command, *tiny, *RAY]) == 2
    assert str(bad) in capsys.readouterr().err
    assert snapshot(done) == before


def test_a_worker_that_cannot_build_its_model_for_no_fault_of_the_input_says_so_in_one_line(tmp_path, monkeypatch):
    """Out of memory (or a broken install) while a worker builds its model: the driver raised a
    RuntimeError (a traceback, the worker's own traceback dropped); now WorkerFailed, the CLI's
    one line and exit 1, the worker's traceback kept for -v."""
    from sam2prune import models

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no room for the model")

    monkeypatch.setattr(models, "build_predictor", out_of_memory)
    (tmp_path / "run.json").write_text("{}")
    model = distributed.WorkerModel("sam2.1_hiera_t", TINY_SIZE, "cpu", 0, False, False, "off")
    worker = distributed.SequenceWorker(model, None, threads=1)
    sequence = next(iter(read_davis(_davis_root(tmp_path, names=("chair",)))))
    with pytest.raises(distributed.WorkerSetupError) as raised:
        worker.run(tmp_path, sequence, ProtocolConfig(), None)
    assert not raised.value.user_error and "MemoryError: no room for the model" in raised.value.message
    assert "Traceback" in raised.value.details and "out_of_memory" in raised.value.details
    import pickle  # Ray ships it to the driver

    again = pickle.loads(pickle.dumps(raised.value))
    assert (again.message, again.user_error, again.details) == (raised.value.message, False, raised.value.details)


def test_a_batch_whose_workers_wait_for_resources_says_so(tmp_path, monkeypatch, capsys):
    """Another job holding the cluster's CPUs: the batch waited without a word ('evaluating:
    0/1'); it says what it waits for, then goes on when the CPUs are free."""
    root = _davis_root(tmp_path, names=("chair",))

    @ray.remote(num_cpus=2)
    class Holder:
        def ping(self) -> int:
            return 1

    holder = Holder.remote()
    ray.get(holder.ping.remote())
    original = distributed.RayCluster._no_worker_message

    def said_then_freed(self, ray_module):
        message = original(self, ray_module)
        ray.kill(holder)
        return message

    monkeypatch.setattr(distributed, "WORKER_START_WAIT_S", 1.0)
    monkeypatch.setattr(distributed.RayCluster, "_no_worker_message", said_then_freed)
    one = ["--workers", "1", "--threads-per-worker", "1"]
    assert _cli("eval", root, tmp_path / "run", "--scorer", "prior", *one) == 0
    error = capsys.readouterr().err
    assert "no Ray worker has started after 1 s: each needs 1 CPU on one node; free now: 0 CPUs" in error


def test_sigterm_while_the_driver_waits_on_ray_exits_143(tmp_path, monkeypatch, capsys):
    """SIGTERM arriving inside ray.wait: Ray turned the exit into SystemExit(1), the status of
    'sequences failed', without 'terminated' (README promises 143)."""
    import signal
    import threading

    root = _davis_root(tmp_path, names=(*NAMES, "chair_d"))
    original = distributed.progress_bar
    timers = []

    def killed_while_waiting(*args, **kwargs):
        bar = original(*args, **kwargs)
        update = bar.update

        def update_then_kill(count=1):
            update(count)
            if not timers:  # the driver is back in ray.wait for the other worker's sequence
                timers.append(threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)))
                timers[0].start()

        bar.update = update_then_kill
        return bar

    monkeypatch.setattr(distributed, "progress_bar", killed_while_waiting)
    previous = signal.signal(signal.SIGTERM, lambda *args: None)  # a late signal must not end pytest
    try:
        code = _cli("eval", root, tmp_path / "run", *RAY, rounds=1)
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()
        signal.signal(signal.SIGTERM, previous)
    assert code == 143
    assert "sam2prune: terminated" in capsys.readouterr().err


def test_an_address_from_ray_address_is_named_as_such(monkeypatch):
    """RAY_ADDRESS set, --workers given: 'cannot reach the Ray cluster at 127.0.0.1:1' did not
    say where the address came from."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    from_env = r"cannot reach the Ray cluster at '127\.0\.0\.1:1' \(RAY_ADDRESS\) \("
    with pytest.raises(InputError, match=from_env), distributed.connect(RayConfig(workers=1), device="cpu"):
        pass
    given = r"cannot reach the Ray cluster at '127\.0\.0\.1:2' \("
    with (
        pytest.raises(InputError, match=given),
        distributed.connect(RayConfig(ray_address="127.0.0.1:2"), device="cpu"),
    ):
        pass


def test_a_worker_builds_a_yaml_by_its_absolute_path_under_the_name_typed(tmp_path, monkeypatch):
    """The YAML's absolute path became the model's name on workers: an aligner fit on
    `t.yaml` was refused there ('fit on t.yaml tokens; this model is /abs/t.yaml'), not serially."""
    import sam2

    yaml = tmp_path / "t.yaml"
    shutil.copy(Path(sam2.__file__).parent / "configs" / "sam2.1" / "sam2.1_hiera_t.yaml", yaml)
    model = distributed.WorkerModel("t.yaml", TINY_SIZE, "cpu", model_file=str(yaml))  # as the driver names ./t.yaml
    monkeypatch.chdir(tmp_path.parent)  # the worker runs in another folder
    predictor = distributed.SequenceWorker(model, None, threads=1)._build(None)
    assert predictor.model_name == "t.yaml" and predictor.config_path == yaml  # as a serial run names it

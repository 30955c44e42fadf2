"""Past one machine: two processes on localhost as a JAX cluster, resume, and TensorFlow's limit.

The two processes find each other through Keras' cluster variables
(`keras_residual.distribution.CLUSTER_VARIABLES`) on a free port chosen at run
time, under a hard timeout that kills both (a process whose peer died waits in
a collective forever). The job first loses a worker: process 1 dies in the
middle of `examples/train_cifar.py`'s second epoch, and process 0, stuck in
the next gradient exchange, is killed as a scheduler would. Restarted, both
resume from the chief's backup, finish, and run `examples/degradation.py
--quick` in the same process, as one job would, then the lesion studies of
tests/test_lesion_distributed.py; the references are the same two scripts
and studies run here, in this single process, uninterrupted, on the same
global batches. Each process has two host devices: `DataParallel` runs over
4 devices in 2 processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_REASON = "the multi-process path is keras.distribution on JAX (README, 'Past one machine')"

#: What every process of the job runs: the two scripts' `main`, one after the other.
#: `JOB ROOT OUT DATA preempt` runs only train_cifar and kills process 1 (`os._exit`, no
#: cleanup, as a lost machine) before its 7th step, in the middle of the second epoch.
JOB = textwrap.dedent(
    """
    import importlib.util, json, os, sys

    def script(name):
        spec = importlib.util.spec_from_file_location(name, f"{sys.argv[1]}/examples/{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    out, data, phase = sys.argv[2:5]
    if phase == "preempt" and os.environ["KERAS_DISTRIBUTION_PROCESS_ID"] == "1":
        from keras_residual import training

        class LostWorker(training.StopAtStep):
            def on_train_batch_begin(self, batch, logs=None):
                if int(self.model.optimizer.iterations) == 6:
                    print("LOST", flush=True)
                    os._exit(3)

        training.StopAtStep = LostWorker
    script("train_cifar").main([*CIFAR_ARGS, "--data", data, "--out", f"{out}/cifar"])
    if phase == "preempt":
        sys.exit(0)
    script("degradation").main(["--quick", "--depths", "8", "--no-progress",
                                "--out", f"{out}/degradation"])
    from keras_residual.distribution import distribution_setup
    print("SETUP", json.dumps(distribution_setup().description))
    """
)
#: 12 steps of batch 8 over 32 images: 3 epochs of 4 steps; a backup after each epoch.
CIFAR_ARGS = ["--depth", "8", "--batch-size", "8", "--iterations", "12", "--seed", "0"]
JOB = f"CIFAR_ARGS = {CIFAR_ARGS!r}\n" + JOB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_cluster(tmp_path, *args: str, processes: int = 2, job: str = JOB,
                  extra_env: dict | None = None) -> list[subprocess.Popen]:
    """Starts `job` in `processes` processes; process i's temporary folder is tmp_path/tmp<i>.

    Each runs `python -c job ROOT tmp_path/cluster *args`, with `extra_env` added to its
    environment.
    """
    port = _free_port()
    procs = []
    for i in range(processes):
        (tmp_path / f"tmp{i}").mkdir(exist_ok=True)
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg",
                   CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp_path / f"tmp{i}"),
                   KERAS_HOME=str(tmp_path / "keras_home"),
                   KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
                   KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes),
                   KERAS_DISTRIBUTION_PROCESS_ID=str(i), **(extra_env or {}))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", job, ROOT, str(tmp_path / "cluster"), *args], env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """Every process' output; kills them all when one fails or the time is up."""
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(0.1, deadline - time.monotonic()))[0])
            assert proc.returncode == 0, outputs[-1][-4000:]
    finally:
        kill(procs)
    return outputs


def kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}",
                                                  os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def h5_arrays(path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


def model_weights(path) -> list[np.ndarray]:
    import keras

    import keras_residual  # noqa: F401  (registers the layers the saved model uses)

    return keras.saving.load_model(path).get_weights()


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, names in os.walk(folder) for f in names)


def printed(log: str, prefix: str) -> str:
    return [line for line in log.splitlines() if line.startswith(prefix)][-1]


def lose_a_worker(procs: list[subprocess.Popen], timeout: float) -> str:
    """Waits for process 1 to die mid-run, then kills process 0, stuck in a collective."""
    try:
        log = procs[1].communicate(timeout=timeout)[0]
    finally:
        kill(procs)
    assert procs[1].returncode == 3 and "LOST" in log, log[-4000:]
    return log


@pytest.mark.backends("jax", reason=CLUSTER_REASON)
@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_after_losing_one(tmp_path, capsys):
    from test_lesion_distributed import JAX_JOB, check_jax_job, single_device_network

    data = load_script("train_cifar").write_random_npz(str(tmp_path / "tiny.npz"))
    # Two host devices per process: DataParallel over 4 devices in 2 processes. The job's
    # last part is the lesion studies of test_lesion_distributed (issue 22, item 5).
    lesions, lesion_model, lesion_x, lesion_y = single_device_network()
    # Added to the session's XLA_FLAGS (make test's cheaper CPU code generation), not instead.
    flags = [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2"]
    env = {"XLA_FLAGS": " ".join(flag for flag in flags if flag),
           "LESION_LABELS": json.dumps(lesion_y.tolist())}
    lose_a_worker(start_cluster(tmp_path, data, "preempt", extra_env=env), timeout=120)
    cluster = tmp_path / "cluster"
    assert not (cluster / "cifar" / "model.keras").exists()
    assert (cluster / "cifar" / "checkpoints" / "epoch_001.weights.h5").exists()
    assert not (cluster / "cifar" / "checkpoints" / "epoch_002.weights.h5").exists()

    procs = start_cluster(tmp_path, data, "all", job=JOB + JAX_JOB, extra_env=env)
    try:
        # The references, here in one process and uninterrupted, while the cluster runs.
        lesion_reference = lesions["studies"](lesion_model, lesion_x, lesion_y)
        reference = tmp_path / "single"
        load_script("train_cifar").main([*CIFAR_ARGS, "--data", data,
                                         "--out", f"{reference}/cifar"])
        load_script("degradation").main(["--quick", "--depths", "8", "--no-progress",
                                         "--out", f"{reference}/degradation"])
        single_log = capsys.readouterr().out
    except BaseException:
        kill(procs)
        raise
    logs = finish(procs, timeout=240)

    check_jax_job(logs, lesion_reference)
    for i, log in enumerate(logs):
        description = f"jax: DataParallel over 4 devices in 2 processes (this is process {i})"
        # Both scripts' mains in one process: the second one got the setup the first made
        # (joining the cluster again would have failed).
        assert f"Distribution: {description}" in log
        assert f"; {description};" in printed(log, "Data: ")
        assert json.loads(printed(log, "SETUP ")[6:]) == description
        # Both restarted from the chief's backup of epoch 1: steps 5 and 6 run again.
        assert f"Resuming from {cluster}/cifar/backup after 4 iterations" in log
        assert printed(log, "Test error after 12") == printed(single_log, "Test error after 12")
    assert "Saved" in logs[0] and "Saved" not in logs[1]

    # train_cifar: the cluster's weights are the single process' within float round-off
    # (12 SGD steps at learning rate 0.1 after gradients summed in another order), far below
    # what the last epoch moved them: a resume on the wrong batches or without the optimizer's
    # momentum would be of that size.
    ckpt = "cifar/checkpoints/epoch_00{}.weights.h5"
    got, want, before = (h5_arrays(folder / ckpt.format(epoch)) for folder, epoch in (
        (cluster, 3), (reference, 3), (reference, 2)))
    assert sorted(got) == sorted(want) and got
    diff, moved = (max(float(np.max(np.abs(a[k] - want[k]))) for k in want) for a in (got, before))
    print(f"train_cifar, lost a worker and resumed: max |two processes - one process| = "
          f"{diff:.2e}; the last epoch moved the weights by up to {moved:.2e}")
    assert diff < 1e-4 and diff < moved / 100
    assert [w.shape for w in model_weights(cluster / "cifar" / "model.keras")] == [
        w.shape for w in model_weights(reference / "cifar" / "model.keras")]

    # degradation: the same errors and losses, and the same weights after each epoch.
    ckpt = "degradation/runs/{}/seed0/checkpoints/epoch_001.weights.h5"
    for name in ("plain-8", "residual-8"):
        got, want = (h5_arrays(folder / ckpt.format(name)) for folder in (cluster, reference))
        assert sorted(got) == sorted(want) and got
        diff = max(float(np.max(np.abs(got[k] - want[k]))) for k in got)
        print(f"degradation --quick {name}: max |two processes - one process| = {diff:.2e}")
        assert diff < 1e-5
        result = [json.loads((folder / f"degradation/runs/{name}/seed0/result.json").read_text())
                  for folder in (cluster, reference)]
        np.testing.assert_allclose(result[0]["curves"]["train_loss"],
                                   result[1]["curves"]["train_loss"], rtol=1e-5)
        assert result[0]["curves"]["test_error"] == pytest.approx(result[1]["curves"]["test_error"])

    # Only process 0 wrote the job's folder: it holds what the single process wrote, once
    # (one TensorBoard file per log folder; train_cifar's two runs wrote one each), and
    # process 1's copies went to its own temp folders.
    assert [f for f in files_under(cluster) if "events" not in f] == [
        f for f in files_under(reference) if "events" not in f]
    for part, runs in (("cifar", 2), ("degradation", 1)):
        events = [len([f for f in files_under(folder / part) if "events" in f])
                  for folder in (cluster, reference)]
        assert events[0] == runs * events[1] > 0, events
    theirs = [f for f in files_under(tmp_path / "tmp1") if "keras_residual_process_" in f]
    assert not any(f.endswith("model.keras") for f in theirs)
    assert any(f.endswith("epoch_001.weights.h5") for f in theirs)
    assert any(f.endswith("results.json") for f in theirs)
    assert not [f for f in files_under(tmp_path / "tmp0") if "keras_residual_process_" in f]


@pytest.mark.backends("torch", reason="one process: BackupAndRestore and the skipped batches "
                      "are backend-neutral; on the backend that trains small networks fastest "
                      "(the two-process runs above are JAX's)")
@pytest.mark.slow
def test_train_cifar_resumes_mid_epoch_with_the_uninterrupted_weights(tmp_path, monkeypatch, capsys):
    from keras_residual import training

    script = load_script("train_cifar")
    data = script.write_random_npz(str(tmp_path / "tiny.npz"))
    # 3 epochs of 4 steps (32 images, batch 8); the interrupted run dies at step 7 of 12.
    args = ["--depth", "8", "--batch-size", "8", "--iterations", "12", "--seed", "0",
            "--data", data]
    script.main([*args, "--out", str(tmp_path / "whole")])

    class Preempted(training.StopAtStep):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 6:
                raise KeyboardInterrupt("preempted in the middle of epoch 2")

    with monkeypatch.context() as patch:
        patch.setattr(training, "StopAtStep", Preempted)
        with pytest.raises(KeyboardInterrupt):
            script.main([*args, "--out", str(tmp_path / "cut")])
    assert not (tmp_path / "cut" / "model.keras").exists()
    capsys.readouterr()
    script.main([*args, "--out", str(tmp_path / "cut")])
    log = capsys.readouterr().out
    # The backup is from the end of epoch 1: steps 5 and 6 are trained again, on the same batches.
    assert f"Resuming from {tmp_path / 'cut'}/backup after 4 iterations" in log
    assert "Test error after 12 iterations" in log
    got, want = (model_weights(tmp_path / run / "model.keras") for run in ("cut", "whole"))
    diff = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))
    with capsys.disabled():
        print(f"train_cifar resumed vs uninterrupted: max |difference| = {diff:.2e}")
    assert diff < 1e-6
    assert sorted(os.listdir(tmp_path / "cut" / "checkpoints")) == [
        f"epoch_00{i}.weights.h5" for i in (1, 2, 3)]


@pytest.mark.backends("tensorflow", reason="TF_CONFIG and MultiWorkerMirroredStrategy are TensorFlow's")
def test_tensorflow_refuses_a_cluster_with_the_reason_and_the_way_out(monkeypatch):
    from keras_residual import distribution

    workers = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
               "task": {"type": "worker", "index": 1}}
    monkeypatch.setattr(distribution, "_SETUP", None)
    monkeypatch.setenv("TF_CONFIG", json.dumps(workers))
    with pytest.raises(RuntimeError) as error:
        distribution.distribution_setup()
    message = str(error.value)
    assert "TF_CONFIG" in message and "MultiWorkerMirroredStrategy" in message
    assert "https://github.com/keras-team/keras/issues/20585" in message
    assert "KERAS_BACKEND=jax" in message and "KERAS_DISTRIBUTION_PROCESS_ID" in message
    monkeypatch.delenv("TF_CONFIG")
    for name, value in (("JOB_ADDRESSES", "localhost:1"), ("NUM_PROCESSES", "2"),
                        ("PROCESS_ID", "0")):
        monkeypatch.setenv(f"KERAS_DISTRIBUTION_{name}", value)
    with pytest.raises(RuntimeError, match="KERAS_DISTRIBUTION_\\* variables ask for training"):
        distribution.distribution_setup()
    assert distribution._SETUP is None  # nothing was set up


@pytest.mark.multibackend
def test_cluster_variables_all_or_none():
    from keras_residual.distribution import cluster_from_environment

    full = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "0"}
    assert cluster_from_environment(full) == ("10.0.0.1:1234,10.0.0.2:1234", 2, 0)
    assert cluster_from_environment({"TF_CONFIG": "{}"}) is None
    for bad in ({"KERAS_DISTRIBUTION_PROCESS_ID": "1"},                  # only one of three
                dict(full, KERAS_DISTRIBUTION_PROCESS_ID="2"),           # id out of 0 ... N-1
                dict(full, KERAS_DISTRIBUTION_NUM_PROCESSES="two")):     # not a number
        with pytest.raises(ValueError, match="Received: KERAS_DISTRIBUTION_JOB_ADDRESSES="):
            cluster_from_environment(bad)


@pytest.mark.backends("torch", reason="splits seeds, backend-neutral bookkeeping, on the "
                       "backend that trains small networks fastest; the networks, deletions and "
                       "precise BatchNorm it runs are tested on every backend")
def test_fig8_shards_merged_equal_the_unsharded_study(tmp_path):
    from keras_residual.experiments.resilience import fig8_study, merge_fig8
    from keras_residual.models import mnist_resnet

    def build(survival):
        model = mnist_resnet(input_shape=(8, 8, 1), blocks=(1, 1), filters=(4, 8),
                             drop_rate=1.0 - survival)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    rng = np.random.default_rng(0)
    data = type("Data", (), dict(
        x_train=rng.random((64, 8, 8, 1), "float32"), y_train=np.arange(64) % 10,
        x_test=rng.random((32, 8, 8, 1), "float32"), y_test=np.arange(32) % 10))
    options = dict(seeds=2, epochs=1, precise_bn_batches=1)
    whole = fig8_study(build, data, **options)
    shards = [fig8_study(build, data, shard=(i, 2), **options) for i in (1, 0)]
    assert [s["seed_ids"] for s in shards] == [[1], [0]]
    # Through the script, as N processes would: each shard's folder, then --merge.
    lesion_study = load_script("lesion_study")
    for i, shard in enumerate(shards):
        (tmp_path / f"shard{i}").mkdir()
        (tmp_path / f"shard{i}" / "results.json").write_text(json.dumps(shard))
    assert lesion_study.main(["--preset", "fig8", "--merge", str(tmp_path / "shard0"),
                              str(tmp_path / "shard1"), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged == json.loads(json.dumps(whole))  # every seed's errors, in seed order
    assert merged["seed_ids"] == [0, 1]
    # The seeds differ, so a merge in the wrong order would not pass.
    assert whole["stochastic_depth"]["errors"][0] != whole["stochastic_depth"]["errors"][1]
    assert (tmp_path / "merged" / "results.md").read_text().count("|") > 10
    with pytest.raises(ValueError, match="ran seeds \\[1, 1\\] of 2"):
        merge_fig8([shards[0], shards[0]])
    assert lesion_study.shard_of("1/2") == (1, 2)

"""Where work runs: device requests, threads, mixed precision, torchrun's environment."""

import json
import os
import subprocess
import sys

import pytest
import torch

from codesign.cli import main
from codesign.distributed import process_info
from codesign.errors import ConfigError
from codesign.provenance import runtime_record
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer
from codesign.resources import bundled_checkpoint
from codesign.runtime import Runtime, make_runtime, parse_device, resolve_device

CHECKPOINT = str(bundled_checkpoint("resnet8-digits"))


@pytest.fixture
def restore_threads():
    """Commands run in-process set torch's thread count from --threads: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("auto", "auto"),
        ("cpu", "cpu"),
        ("cuda", "cuda"),
        ("cuda:0", "cuda:0"),
        ("cuda:07", "cuda:7"),
    ],
)
def test_device_spellings(text, canonical):
    assert parse_device(text) == canonical


@pytest.mark.parametrize("text", ["gpu", "CPU", "cuda:", "cuda:-1", "cuda:x", "cuda0", "", "mps"])
def test_bad_device_strings_are_refused_with_the_valid_ones(text):
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        parse_device(text)


def test_device_resolution_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    for request in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_device(request)


def test_device_resolution_with_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    # Under torchrun each process takes the GPU of its LOCAL_RANK.
    assert resolve_device("cuda", local_rank=1, world_size=2) == "cuda:1"
    assert resolve_device("auto", local_rank=1, world_size=2) == "cuda:1"
    with pytest.raises(ConfigError, match="GPU 2 does not exist"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="GPU 2 does not exist"):
        resolve_device("cuda", local_rank=2, world_size=3)
    with pytest.raises(ConfigError, match="every process on one GPU"):
        resolve_device("cuda:1", local_rank=0, world_size=2)


def test_torchrun_environment():
    assert process_info({}) == process_info({"WORLD_SIZE": "1"})
    info = process_info({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (info.rank, info.local_rank, info.world_size) == (3, 1, 4)
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"}, {"RANK": "x"}):
        with pytest.raises(ConfigError, match="RANK"):
            process_info(bad)


def test_make_runtime_checks_before_any_work():
    runtime = make_runtime("cpu", "bf16", threads=3, seed=5, env={})
    assert runtime == Runtime(device="cpu", amp="bf16", threads=3, seed=5)
    assert runtime.amp_dtype is torch.bfloat16 and runtime.is_writer and not runtime.distributed
    with pytest.raises(ConfigError, match="--threads 0"):
        make_runtime("cpu", threads=0, env={})
    with pytest.raises(ConfigError, match="--amp 'fp16'"):
        make_runtime("cpu", "fp16", env={})
    second = make_runtime("cpu", env={"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert (second.rank, second.world_size, second.is_writer) == (1, 2, False)


def test_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    """End to end in a process that sees no GPU (also on a machine that has one)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "codesign", "eval", "--checkpoint", CHECKPOINT]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out"), "--device", "cuda"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--device cuda" in done.stderr
    assert "use --device cpu or auto" in done.stderr
    assert not (tmp_path / "out" / "result.json").exists()


def test_bad_device_flag_is_a_parse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", CHECKPOINT, "--out", str(tmp_path), "--device", "gpu"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_threads_flag_is_applied_and_recorded(tmp_path, restore_threads):
    wanted = 2 if torch.get_num_threads() == 1 else 1
    args = ["eval", "--checkpoint", CHECKPOINT, "--out", str(tmp_path), "--device", "cpu"]
    code = main([*args, "--threads", str(wanted)])
    assert code == 0
    assert torch.get_num_threads() == wanted
    record = json.loads((tmp_path / "result.json").read_text())["runtime"]
    assert record["threads"] == wanted
    assert record["device"] == "cpu" and record["world_size"] == 1 and record["amp"] == "off"
    assert record["torch"] == torch.__version__ and record["cuda"] is None
    assert record["device_name"] == record["cpu_model"]
    assert record["tf32"] is False and record["cudnn_benchmark"] is False


def test_runtime_record_keeps_the_provenance_keys():
    record = runtime_record(7, Runtime(amp="bf16", world_size=2, rank=0))
    for key in ("codesign", "git_commit", "python", "numpy", "cpu_model", "cpu_capability"):
        assert key in record
    assert record["seed"] == 7 and record["amp"] == "bf16" and record["world_size"] == 2


def test_quantizers_compute_in_fp32_under_bf16_autocast():
    """Inside autocast, a bf16 input is quantized exactly as its fp32 value would be, and the
    result is fp32: bf16 x / s would round some values onto the wrong code."""
    torch.manual_seed(0)
    act = ActQuantizer(8)
    act.scale.data.fill_(0.013)
    x = (torch.randn(4, 8, 5, 5) * 2).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = act(x)
    assert inside.dtype is torch.float32
    assert torch.equal(inside, act(x.float()))
    weight = WeightQuantizer(torch.Size([8, 4, 3, 3]), 4)
    weight.scale.data.fill_(0.05)
    w = torch.randn(8, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(weight(w), weight(w.float()))
    act.learn_scale = True  # the LSQ path too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        learned = act(x)
    assert learned.dtype is torch.float32 and torch.equal(learned, act(x.float()))

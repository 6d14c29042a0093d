"""Through the CLI: divergence, bad training ranges and damaged checkpoints exit 2 with one
stderr line and leave no model or result behind."""

import pytest

from codesign.cli import demo_checkpoint, main


def run_main(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


def test_diverging_training_exits_2_and_writes_no_model(tmp_path, capsys):
    """Fine-tuning a pruned model at lr 1e30 overflows to NaN. (QAT at such a rate no longer
    does: its LSQ step sizes blow up first, and with every bias added on the accumulator grid
    every quantized value then rounds to 0, a finite dead model rather than a NaN.)"""
    out = tmp_path / "prune"
    code, lines = run_main(
        capsys,
        "prune",
        "--checkpoint",
        str(demo_checkpoint()),
        "--sparsity",
        "2:4",
        "--epochs",
        "1",
        "--lr",
        "1e30",
        "--batch-size",
        "512",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("codesign: error: training diverged: the loss became NaN/Inf at")
    assert lines[0].endswith("lower the learning rate (lr=1e+30)")
    for name in ("model.pt", "model.pt.sha256", "result.json", "finetune_state.pt"):
        assert not (out / name).exists(), name


@pytest.mark.parametrize(
    "command,flag,value,message",
    [
        ("prune", "--temperature", "-1", "distill_temperature"),
        ("prune", "--lr", "nan", "lr"),
        ("qat", "--lr", "-1", "lr"),
        ("qat", "--lr", "nan", "lr"),
    ],
)
def test_out_of_range_training_values_exit_2(tmp_path, capsys, command, flag, value, message):
    out = tmp_path / "out"
    bits = ["--weight-bits", "8", "--act-bits", "8"] if command == "qat" else ["--sparsity", "2:4"]
    code, lines = run_main(
        capsys,
        command,
        "--checkpoint",
        str(demo_checkpoint()),
        *bits,
        f"{flag}={value}",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 2
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_checkpoint_exits_2(tmp_path, capsys):
    checkpoint = tmp_path / "m.pt"
    data = bytearray(demo_checkpoint().read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    (tmp_path / "m.pt.sha256").write_text(
        (demo_checkpoint().parent / "resnet8-digits.pt.sha256").read_text()
    )
    out = tmp_path / "eval"
    code, lines = run_main(capsys, "eval", "--checkpoint", str(checkpoint), "--out", str(out))
    assert code == 2
    assert lines == [
        f"codesign: error: checkpoint {checkpoint} is corrupt: its sha256 does not match "
        f"{checkpoint}.sha256; restore it or rebuild it"
    ]
    assert not out.exists()

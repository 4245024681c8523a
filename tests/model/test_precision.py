"""bf16 on a CPU: `true` runs in fp32 where bf16 would be emulated (and says so once), `force` insists,
`auto` follows the hardware; on CUDA nothing changes. The CPU's bf16 instructions are faked both ways, so
these tests do not depend on the CPU that runs them."""

from __future__ import annotations

import pytest
import torch

from instill.config import TrainArgs
from instill.doctor.environment import Device, precision_check
from instill.doctor.table import FAIL, PASS
from instill.errors import ConfigError
from instill.model import load
from instill.model.load import Precision, check_precision


@pytest.fixture
def cpu(monkeypatch):
    """A CPU whose bf16 instructions the test sets: cpu(True) has AMX / AVX512-BF16, cpu(False) emulates bf16."""
    monkeypatch.setattr(load, "_said", set())
    monkeypatch.setattr(load, "device_type", lambda: "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def with_bf16(native: bool) -> None:
        monkeypatch.setattr(load, "native_bf16", lambda: native)

    return with_bf16


def test_bf16_true_on_a_cpu_without_bf16_runs_in_fp32_and_says_so_once(cpu, capsys):
    cpu(False)
    precision = Precision(True)
    assert precision.bf16 is False and precision.fell_back and precision.compute_dtype == torch.float32
    check_precision(precision)
    check_precision(Precision(True))  # train, then load_model: one line, not two
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "running in fp32" in lines[0] and "bf16: force" in lines[0]


def test_bf16_true_on_a_cpu_with_bf16_stays_bf16(cpu, capsys):
    cpu(True)
    precision = Precision(True)
    assert precision.bf16 is True and not precision.fell_back and precision.compute_dtype == torch.bfloat16
    check_precision(precision)
    assert capsys.readouterr().out == ""


def test_bf16_force_insists_and_warns_where_emulated(cpu, capsys):
    cpu(False)
    precision = Precision("force")
    assert precision.bf16 is True and precision.forced and precision.compute_dtype == torch.bfloat16
    check_precision(precision)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "bf16: force" in out and "emulated" in out
    cpu(True)
    check_precision(Precision("force"))
    assert capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match="bf16 and fp16 are both set"):
        check_precision(Precision("force", fp16=True))


def test_bf16_auto_follows_the_cpu(cpu):
    cpu(False)
    assert Precision("auto").bf16 is False and not Precision("auto").fell_back
    cpu(True)
    assert Precision("auto").bf16 is True and Precision("auto", fp16=True).bf16 is False


def test_bf16_true_on_cuda_is_untouched(monkeypatch):
    monkeypatch.setattr(load, "device_type", lambda: "cuda")
    monkeypatch.setattr(load, "native_bf16", lambda: False)  # must not be asked: nothing changes on a GPU
    assert Precision(True).bf16 is True and not Precision(True).fell_back
    monkeypatch.setattr(load, "device_type", lambda: "npu")
    assert Precision(True).bf16 is True


def test_the_trainer_gets_the_resolved_precision(cpu):
    from instill.train.run import training_arguments

    cpu(False)
    assert training_arguments(TrainArgs(output_dir="unused", bf16=True), has_eval=False).bf16 is False
    assert training_arguments(TrainArgs(output_dir="unused", bf16="force"), has_eval=False).bf16 is True
    cpu(True)
    assert training_arguments(TrainArgs(output_dir="unused", bf16=True), has_eval=False).bf16 is True


def test_the_doctor_still_fails_bf16_on_a_cpu_without_it():
    old_cpu = Device("cpu", "EPYC", bf16=False, fp16=False, detail="no AMX or AVX512-BF16 (AVX2)")
    for value in (True, "force"):
        check = precision_check(old_cpu, bf16=value, fp16=False)
        assert check.status == FAIL and f"bf16: {'force' if value == 'force' else 'true'}" in check.detail
    assert "fp32" in precision_check(old_cpu, bf16=True, fp16=False).fix
    auto = precision_check(old_cpu, bf16="auto", fp16=False)  # auto trains in fp32 there: nothing to fix
    assert auto.status == PASS and auto.detail.startswith("fp32")
    amx = Device("cpu", "Xeon", bf16=True, fp16=False, detail="AMX, AVX512-BF16")
    assert precision_check(amx, bf16="auto", fp16=False).detail.startswith("bf16 on cpu")

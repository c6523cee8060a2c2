"""tfnewton.devices: the chapters' device and TFNEWTON_DEVICE."""

import pytest
import torch

import tfnewton
from tfnewton.devices import ENVIRONMENT_VARIABLE, chapter_device, default_device, describe_device


def test_default_is_gpu_where_there_is_one(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_environment_variable_forces_cpu(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "cpu")
    assert default_device() == torch.device("cpu")


@pytest.mark.parametrize("value, match", [("gpu", "TFNEWTON_DEVICE='gpu'"), ("cuda:x", "TFNEWTON_DEVICE='cuda:x'")])
def test_environment_variable_rejects_nonsense(monkeypatch, value, match):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, value)
    with pytest.raises(ValueError, match=match):
        default_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_environment_variable_asking_for_missing_cuda(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        default_device()


def test_chapter_device_prints_versions(monkeypatch, capsys):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "cpu")
    assert chapter_device() == torch.device("cpu")
    line = capsys.readouterr().out.strip()
    assert line == describe_device("cpu")
    assert line.startswith(f"tfnewton {tfnewton.__version__} · torch {torch.__version__} · cpu (")
    assert chapter_device(announce=False) == torch.device("cpu")
    assert capsys.readouterr().out == ""


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_describe_names_the_gpu():
    assert torch.cuda.get_device_name(0) in describe_device("cuda")

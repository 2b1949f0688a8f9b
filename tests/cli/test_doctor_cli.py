"""`gencbm doctor`: environment report, op states, and --build-ops outcomes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gencbm_cli.main import app


@pytest.fixture(autouse=True)
def _kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "kernels"))
    from engine.ops import builder

    builder._forget()
    yield
    builder._forget()


def test_doctor_json_reports_versions_and_ops(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    import torch

    assert report["torch"] == torch.__version__
    assert report["cuda_available"] == torch.cuda.is_available()
    assert report["kernel_cache"] == str(tmp_path / "kernels")
    assert set(report["ops"]) == {"bias_act", "upfirdn2d"}
    for status in report["ops"].values():
        assert status["built"] is False  # fresh cache: nothing built, and doctor never compiles
        assert status["state"] in ("buildable", "unavailable")


def test_doctor_text_lists_each_op():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "bias_act" in result.stdout and "upfirdn2d" in result.stdout
    assert "kernel cache" in result.stdout


def test_build_ops_failure_exits_1_and_names_the_error(monkeypatch):
    from engine.errors import OpBuildError
    from engine.ops import builder

    def broken(name, compile_only=False, **kw):
        raise OpBuildError(f"{name}: nvcc failed (see log)")

    monkeypatch.setattr(builder, "build_op", broken)
    result = CliRunner().invoke(app, ["doctor", "--build-ops", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ops"]["bias_act"]["ok"] is False
    assert "nvcc failed" in report["ops"]["bias_act"]["error"]


def test_build_ops_success_exits_0(monkeypatch):
    from engine.ops import builder

    calls = []

    def fine(name, compile_only=False, **kw):
        calls.append((name, compile_only))
        return {"op": name, "seconds": 1.0}

    monkeypatch.setattr(builder, "build_op", fine)
    result = CliRunner().invoke(app, ["doctor", "--build-ops"])
    assert result.exit_code == 0, result.output
    import torch

    assert calls == [("bias_act", not torch.cuda.is_available()), ("upfirdn2d", not torch.cuda.is_available())]

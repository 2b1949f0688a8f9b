"""engine.ops.builder: cache keys, cache location, locking, atomic builds, failure memory, and one
real compile-and-link of both ops (whenever nvcc and a CUDA build of torch are present)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from engine.errors import OpBuildError
from engine.ops import builder

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own cache root and a process state that forgets earlier loads."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    builder._forget()
    yield
    builder._forget()


def _copy_sources(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for files in builder.OPS.values():
        for rel in files:
            shutil.copy(builder.kernels_dir() / rel, dst / rel)
    return dst


def _can_build() -> str:
    """Empty when a real build can run here, else why not."""
    return "; ".join(builder._problems())


# ---------------------------------------------------------------------------------------------
# Keys and locations.


def test_cache_key_depends_on_sources_and_archs(tmp_path):
    src = _copy_sources(tmp_path / "src")
    k1 = builder.cache_key("bias_act", sources_dir=src, archs=["8.0"])
    assert k1 == builder.cache_key("bias_act", sources_dir=src, archs=["8.0"])  # stable
    assert k1 != builder.cache_key("bias_act", sources_dir=src, archs=["9.0"])
    assert k1 != builder.cache_key("bias_act", sources_dir=src, archs=["8.0", "9.0"])
    for rel in builder.OPS["bias_act"]:  # every file counts, headers included
        saved = (src / rel).read_bytes()
        (src / rel).write_bytes(saved + b"\n// changed\n")
        assert builder.cache_key("bias_act", sources_dir=src, archs=["8.0"]) != k1
        (src / rel).write_bytes(saved)
    assert builder.cache_key("bias_act", sources_dir=src, archs=["8.0"]) == k1
    # another op's files do not count
    (src / "upfirdn2d.cu").write_bytes(b"// other op\n")
    assert builder.cache_key("bias_act", sources_dir=src, archs=["8.0"]) == k1
    assert builder.cache_key("upfirdn2d", sources_dir=src, archs=["8.0"]) != k1


def test_arch_list_from_env(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6; 9.0+PTX")
    assert builder.arch_list() == ["8.6", "9.0+PTX"]
    assert builder._gencode_flags(["8.6", "9.0+PTX"]) == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90",
    ]
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "Ampere")
    with pytest.raises(OpBuildError, match="Ampere"):
        builder.arch_list()
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    if not torch.cuda.is_available():
        assert builder.arch_list() == list(builder.DEFAULT_ARCHS)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "te"))
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert builder.cache_root() == tmp_path / "te"
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert builder.cache_root() == tmp_path / "home" / "kernels"
    monkeypatch.delenv("GENCBM_HOME")
    assert builder.cache_root() == tmp_path / "xdg" / "gencbm" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert builder.cache_root() == Path.home() / ".cache" / "gencbm" / "kernels"


def test_unknown_op():
    with pytest.raises(OpBuildError, match="unknown CUDA op"):
        builder.cache_key("nope", archs=["8.0"])


# ---------------------------------------------------------------------------------------------
# Import and status never compile.


def test_importing_never_compiles(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import engine.ops, engine.ops.builder, engine.ops.cuda_bias_act, engine.ops.cuda_upfirdn2d
        assert "torch.utils.cpp_extension" not in sys.modules, "cpp_extension imported"
        """
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "c")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)
    assert not (tmp_path / "c").exists()


def test_op_status_never_compiles(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    st = builder.op_status("upfirdn2d")
    assert st["op"] == "upfirdn2d" and st["built"] is False and st["loaded"] is False
    assert st["archs"] == ["8.0"] and st["key"] == builder.cache_key("upfirdn2d")
    assert st["buildable"] == (not _can_build())
    assert st["reason"] == _can_build()
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------
# Locking.

_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.ops import builder
    with builder._build_lock(Path(sys.argv[1]), 30, "test"):
        print("locked", flush=True)
        time.sleep(300)
    """
)


def test_lock_of_a_killed_build_is_recovered_and_a_live_one_times_out(tmp_path):
    lock = tmp_path / "cache" / "op-key.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # A live holder: waiting is bounded, with a one-line error naming the lock.
        t0 = time.monotonic()
        with pytest.raises(OpBuildError) as info:
            with builder._build_lock(lock, 0.5, "CUDA op 'x'"):
                pass
        assert time.monotonic() - t0 < 10
        msg = str(info.value)
        assert "timed out" in msg and str(lock) in msg and "\n" not in msg
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    assert lock.exists()  # the file stays behind ...
    t0 = time.monotonic()
    with builder._build_lock(lock, 10, "CUDA op 'x'"):  # ... but the lock died with its holder
        pass
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------------------------------------
# Failures: atomic, logged, remembered.


def test_failed_build_leaves_no_partial_entry(tmp_path):
    if _can_build():
        pytest.skip(f"cannot build here: {_can_build()}")
    src = _copy_sources(tmp_path / "broken")
    for rel in builder.OPS["bias_act"]:
        (src / rel).write_text("#error deliberately broken source\n")
    key = builder.cache_key("bias_act", sources_dir=src, archs=["8.0"])
    root = tmp_path / "cache"
    stale = root / f"bias_act-{key}.tmp-killed"  # what a killed build leaves behind
    stale.mkdir(parents=True)
    (stale / "half.o").write_bytes(b"\0" * 10)

    with pytest.raises(OpBuildError) as info:
        builder.build_op("bias_act", compile_only=True, sources_dir=src, archs=["8.0"])
    msg = str(info.value)
    assert "\n" not in msg and "bias_act" in msg
    log = root / f"bias_act-{key}.log"
    assert str(log) in msg
    assert "deliberately broken" in log.read_text()
    assert not (root / f"bias_act-{key}").exists()  # no half-written entry
    assert not list(root.glob("*.tmp-*"))  # neither ours nor the stale one
    assert builder.op_status("bias_act")["built"] is False


def test_try_load_op_warns_once_and_never_retries(monkeypatch):
    calls = []

    def failing_build(name, sources_dir, archs, verbose=False):
        calls.append(name)
        raise OpBuildError(f"building CUDA op {name!r} failed: boom (full log: /x.log)")

    monkeypatch.setattr(builder, "_build", failing_build)
    with pytest.warns(RuntimeWarning, match="boom") as record:
        assert builder.try_load_op("bias_act") is None
        assert builder.try_load_op("bias_act") is None
        assert builder.try_load_op("bias_act") is None
    assert len([w for w in record if "boom" in str(w.message)]) == 1
    assert calls == ["bias_act"]
    with pytest.raises(OpBuildError, match="boom"):  # load_op reports the remembered failure
        builder.load_op("bias_act")
    assert calls == ["bias_act"]
    st = builder.op_status("bias_act")
    assert "boom" in st["reason"] and st["loaded"] is False
    # another op is tried (and warns) on its own
    with pytest.warns(RuntimeWarning, match="upfirdn2d"):
        assert builder.try_load_op("upfirdn2d") is None
    assert calls == ["bias_act", "upfirdn2d"]


def test_unexpected_errors_become_one_line_op_build_errors(monkeypatch):
    def crashing_build(name, sources_dir, archs, verbose=False):
        raise ValueError("something odd\nwith a second line")

    monkeypatch.setattr(builder, "_build", crashing_build)
    with pytest.raises(OpBuildError) as info:
        builder.load_op("upfirdn2d")
    assert "\n" not in str(info.value) and "something odd" in str(info.value)


def test_link_flags_use_the_wheel_runtime_when_the_toolkit_has_none(tmp_path):
    wheel_dir = builder._cudart_dir()
    if wheel_dir is None:
        pytest.skip("no CUDA runtime from the nvidia wheels")
    fake_home = tmp_path / "cuda"  # a toolkit without lib64/libcudart.so
    (fake_home / "lib64").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    flags = builder._link_flags(str(fake_home), work)
    link = work / "_link" / "libcudart.so"
    assert flags == [f"-L{link.parent}", f"-Wl,-rpath,{wheel_dir}"]
    assert link.is_symlink() and link.resolve().parent == wheel_dir.resolve()
    # Those flags really link a library against the runtime.
    cxx = shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    (work / "t.cpp").write_text('extern "C" int cudaRuntimeGetVersion(int*);\nint probe() { int v = 0; cudaRuntimeGetVersion(&v); return v; }\n')
    subprocess.run([cxx, "-shared", "-fPIC", str(work / "t.cpp"), "-o", str(work / "t.so"), *flags, "-lcudart", "-Wl,--no-undefined"], check=True)
    # ... and the real toolkit needs no extra flags when it has its own libcudart.so
    home = builder.find_cuda_home()
    if home and any((Path(home) / d / "libcudart.so").exists() for d in ("lib64", "lib")):
        assert builder._link_flags(home, work) == []


def test_summary_picks_the_compiler_error():
    log = "FAILED: x.o\nc++ -c x.cpp\nx.cpp:1:2: error: #error deliberately broken\nninja: build stopped"
    assert builder._summary(log) == "x.cpp:1:2: error: #error deliberately broken"


# ---------------------------------------------------------------------------------------------
# The real thing: both ops compiled and linked (no GPU needed), then loaded from the cache.


@pytest.mark.slow
def test_real_kernels_compile_and_link(monkeypatch, tmp_path):
    if _can_build():
        pytest.skip(f"cannot build here: {_can_build()}")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")  # one architecture keeps it short
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # both ops at once: each is one .cpp and one .cu
        results = dict(zip(builder.OPS, pool.map(lambda n: builder.build_op(n, compile_only=True), builder.OPS)))
    elapsed = time.monotonic() - t0
    print(f"compile-and-link of {', '.join(builder.OPS)}: {elapsed:.1f} s")
    root = tmp_path / "cache"
    for name, r in results.items():
        entry = Path(r["path"])
        assert r["built_now"] and r["archs"] == ["8.0"] and entry.parent == root
        assert (entry / r["library"]).is_file() and (entry / "build.json").is_file()
        assert builder.op_status(name)["built"] is True
        assert builder.op_status(name)["loaded"] is False  # compile_only registers nothing
    assert not list(root.glob("*.tmp-*")) and not list(root.glob("*.log"))
    # A second build is a cache hit.
    assert builder.build_op("bias_act", compile_only=True)["built_now"] is False

    # A fresh process loads from the cache without compiling, and the bindings check their
    # arguments (CPU tensors are refused before any device is touched).
    code = textwrap.dedent(
        """
        import time, torch
        from engine.ops import builder
        t = time.monotonic()
        ba, uf = builder.load_op("bias_act"), builder.load_op("upfirdn2d")
        assert time.monotonic() - t < 30, "loading took too long: did it rebuild?"
        x = torch.zeros(2, 3)
        for call in (lambda: ba.bias_act(x, None, None, None, None, 0, 1, 3, 0.2, 1.0, -1.0),
                     lambda: uf.upfirdn2d(x[None, None], torch.ones(1, 1), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)):
            try:
                call()
            except RuntimeError as e:
                assert "must be a CUDA tensor" in str(e), e
            else:
                raise AssertionError("a CPU tensor was accepted")
        print("ok")
        """
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(root), "TORCH_CUDA_ARCH_LIST": "8.0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
    assert not list(root.glob("*.tmp-*"))

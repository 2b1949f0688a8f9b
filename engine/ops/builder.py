"""Just-in-time builds of the CUDA ops in `kernels/` (DESIGN rule 3).

An op is compiled on its first CUDA use (or by `gencbm doctor --build-ops`) with
`torch.utils.cpp_extension.load` and ninja, never at import time. Builds are cached in

    <root>/<op>-<key>/

where root is $TORCH_EXTENSIONS_DIR, else $GENCBM_HOME/kernels, else $XDG_CACHE_HOME/gencbm/kernels,
else ~/.cache/gencbm/kernels, and key hashes the op's source bytes, the compile flags, the torch,
CUDA toolkit and Python versions and the GPU architectures. A build runs in a temporary
directory next to its final place and is renamed into place only once it succeeded, so a cache
entry is either complete or absent. Builds of one entry are serialised by an OS-level file lock
(released by the kernel when its holder dies, so a killed build never leaves a lock behind);
waiting for it is bounded by $GENCBM_BUILD_LOCK_TIMEOUT seconds (default 1800).

Public API:
    load_op(name) -> module           build if needed and import; raises OpBuildError
    try_load_op(name) -> module|None  same, but warns once and returns None on failure
    build_op(name, compile_only=False) -> dict     build (compile and link) without using a GPU
    op_status(name) -> dict           what doctor shows; never compiles
    cache_root(), cache_key(name), arch_list(), find_cuda_home(), OPS
A failed load is remembered for the life of the process and never retried.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator

from engine.errors import OpBuildError

# The files of each op, relative to the kernels directory; the .cpp/.cu are compiled.
OPS: dict[str, tuple[str, ...]] = {
    "bias_act": ("bias_act.cpp", "bias_act.cu", "bias_act.h"),
    "upfirdn2d": ("upfirdn2d.cpp", "upfirdn2d.cu", "upfirdn2d.h"),
}

# Architectures compiled for when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible.
DEFAULT_ARCHS = ("8.0", "9.0")

CXX_FLAGS = ("-O3",)
NVCC_FLAGS = ("-O3",)

LOCK_TIMEOUT_ENV = "GENCBM_BUILD_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 1800.0

_MANIFEST = "build.json"

_state_lock = threading.RLock()
_loaded: dict[str, ModuleType] = {}
_failed: dict[str, OpBuildError] = {}
_warned: set[str] = set()


# ---------------------------------------------------------------------------------------------
# Where things are.


def kernels_dir() -> Path:
    """The directory holding the op sources (the `kernels` package)."""
    here = Path(__file__).resolve().parents[2] / "kernels"
    if (here / "bias_act.cu").is_file():
        return here
    import kernels  # installed next to `engine`

    return Path(kernels.SOURCES_DIR)


def cache_root() -> Path:
    """The root of the build cache (see the module docstring for the order of precedence)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser()
    if os.environ.get("GENCBM_HOME"):
        return Path(os.environ["GENCBM_HOME"]).expanduser() / "kernels"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "gencbm" / "kernels"
    return Path.home() / ".cache" / "gencbm" / "kernels"


def _is_cuda_home(path: str | os.PathLike | None) -> bool:
    if not path:
        return False
    p = Path(path)
    return (p / "bin" / "nvcc").is_file() and (p / "include" / "cuda_runtime.h").is_file()


@functools.lru_cache(maxsize=8)
def _nvcc_top(nvcc: str) -> str | None:
    """The toolkit root an nvcc (possibly a wrapper script) really uses, from its dry run."""
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.normpath(m.group(1).strip()) if m else None


def find_cuda_home() -> str | None:
    """The CUDA toolkit to compile with: $CUDA_HOME, $CUDA_PATH, then where nvcc lives."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_cuda_home(os.environ.get(var)):
            return os.path.normpath(os.environ[var])
    nvcc = shutil.which("nvcc")
    if nvcc:
        guess = Path(os.path.realpath(nvcc)).parent.parent
        if _is_cuda_home(guess):
            return str(guess)
        top = _nvcc_top(nvcc)  # e.g. /usr/local/bin/nvcc being a script that runs the real one
        if _is_cuda_home(top):
            return top
    for guess in ("/usr/local/cuda",):
        if _is_cuda_home(guess):
            return guess
    return None


@functools.lru_cache(maxsize=8)
def _nvcc_version(cuda_home: str) -> str | None:
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release\s+([\d.]+),\s*V([\d.]+)", out.stdout)
    return m.group(2) if m else None


def _ninja_dir() -> str | None:
    """A directory holding a ninja executable, or None."""
    found = shutil.which("ninja")
    if found:
        return str(Path(found).parent)
    with contextlib.suppress(Exception):
        import ninja  # the PyPI package ships the binary

        if (Path(ninja.BIN_DIR) / "ninja").is_file():
            return str(ninja.BIN_DIR)
    venv_bin = Path(sys.executable).parent  # a venv used without activating it
    if (venv_bin / "ninja").is_file():
        return str(venv_bin)
    return None


def _cudart_dir() -> Path | None:
    """The directory of the CUDA runtime torch itself loads (from the nvidia wheels), if any."""
    with contextlib.suppress(Exception):
        import nvidia  # namespace package of the nvidia-*-cu* wheels

        for base in nvidia.__path__:
            for lib in sorted(Path(base).glob("*/lib/libcudart.so.*")):
                return lib.parent
    return None


# ---------------------------------------------------------------------------------------------
# What a build depends on.


_ARCH_RE = re.compile(r"^(\d+)\.(\d+)([a-z]?)(\+PTX)?$")


def arch_list() -> list[str]:
    """GPU architectures to compile for: $TORCH_CUDA_ARCH_LIST, else the visible GPUs, else DEFAULT_ARCHS."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        archs = [a for a in re.split(r"[;\s,]+", env) if a]
    else:
        archs = []
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                archs.append(f"{major}.{minor}")
        archs = sorted(set(archs)) or list(DEFAULT_ARCHS)
    for a in archs:
        if not _ARCH_RE.match(a):
            raise OpBuildError(f"unsupported CUDA architecture {a!r} in TORCH_CUDA_ARCH_LIST (use numbers like 8.0;9.0+PTX)")
    return archs


def _gencode_flags(archs: list[str]) -> list[str]:
    flags = []
    for a in archs:
        major, minor, suffix, ptx = _ARCH_RE.match(a).groups()  # type: ignore[union-attr]
        num = f"{major}{minor}{suffix}"
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def _read_sources(name: str, sources_dir: Path) -> dict[str, bytes]:
    if name not in OPS:
        raise OpBuildError(f"unknown CUDA op {name!r}; known: {', '.join(OPS)}")
    out = {}
    for rel in OPS[name]:
        path = sources_dir / rel
        try:
            out[rel] = path.read_bytes()
        except OSError as e:
            raise OpBuildError(f"cannot read the source of CUDA op {name!r}: {path}: {e.strerror or e}") from None
    return out


def _key_for(name: str, sources: dict[str, bytes], archs: list[str]) -> str:
    import torch

    cuda_home = find_cuda_home()
    h = hashlib.sha256()

    def part(label: str, value: str | bytes) -> None:
        data = value if isinstance(value, bytes) else value.encode()
        h.update(f"{label}:{len(data)}:".encode())
        h.update(data)

    part("op", name)
    for rel in sorted(sources):
        part(f"src:{rel}", sources[rel])
    part("torch", torch.__version__)
    part("torch.cuda", str(torch.version.cuda))
    part("nvcc", str(_nvcc_version(cuda_home) if cuda_home else None))
    part("archs", ";".join(archs))
    part("flags", " ".join(CXX_FLAGS) + " | " + " ".join(NVCC_FLAGS))
    part("python", f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')} {platform.machine()}")
    return h.hexdigest()[:20]


def cache_key(name: str, *, sources_dir: str | os.PathLike | None = None, archs: list[str] | None = None) -> str:
    """The cache key of op `name` as it would be built now."""
    src = _read_sources(name, Path(sources_dir) if sources_dir else kernels_dir())
    return _key_for(name, src, list(archs) if archs is not None else arch_list())


def _entry_dir(name: str, key: str) -> Path:
    return cache_root() / f"{name}-{key}"


def _problems() -> list[str]:
    """Why nothing can be built here (empty when a build can be attempted)."""
    import torch

    out = []
    if not torch.version.cuda:
        out.append("this PyTorch build has no CUDA support")
    cuda_home = find_cuda_home()
    if cuda_home is None:
        out.append("no CUDA toolkit found (install one with nvcc, or set CUDA_HOME)")
    elif torch.version.cuda:
        nv = _nvcc_version(cuda_home)
        if nv and nv.split(".")[0] != torch.version.cuda.split(".")[0]:
            out.append(f"nvcc {nv} in {cuda_home} does not match PyTorch's CUDA {torch.version.cuda}")
    if _ninja_dir() is None:
        out.append("ninja not found (pip install ninja)")
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        out.append(f"no C++ compiler ({cxx}) on PATH")
    return out


# ---------------------------------------------------------------------------------------------
# Locking, importing, building.


def _lock_timeout() -> float:
    try:
        return float(os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT_S


@contextlib.contextmanager
def _build_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold an OS-level exclusive lock on `path` (it dies with its holder, so none goes stale)."""
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise OpBuildError(
            f"timed out after {timeout:g} s waiting for another process building {what} (lock {path}); "
            f"if that build is stuck, stop it: the lock is freed when its process exits"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _read_manifest(entry: Path) -> dict | None:
    """The manifest of a complete cache entry, or None."""
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not (entry / str(manifest.get("library", ""))).is_file():
        return None
    return manifest


def _import_entry(name: str, entry: Path, manifest: dict) -> ModuleType:
    path = entry / manifest["library"]
    try:
        spec = importlib.util.spec_from_file_location(manifest["module"], path)
        if spec is None or spec.loader is None:
            raise ImportError("no loader for this file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as e:  # ImportError, OSError from dlopen, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OpBuildError(f"cannot load the built CUDA op {name!r} from {path}: {detail} (delete {entry} to rebuild it)") from None
    return module


def _summary(text: str) -> str:
    """The first compiler error line of a build log, shortened."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern in (r":\s*(fatal )?error\b", r"\berror\b"):  # "file:line: error: ..." first
        for ln in lines:
            if re.search(pattern, ln, re.IGNORECASE) and not ln.startswith(("FAILED:", "ninja:", "Error building extension")):
                return ln[:240]
    return (lines[-1] if lines else "unknown error")[:240]


_env_lock = threading.Lock()
_env_users = 0
_env_saved: tuple[str | None, str] | None = None


@contextlib.contextmanager
def _build_environment(cuda_home: str) -> Iterator[ModuleType]:
    """Point torch's cpp_extension at our toolkit and ninja for the duration of a build.

    Counted, so that builds of several ops in threads of one process share the setting.
    """
    global _env_users, _env_saved
    with _env_lock:
        if "torch.utils.cpp_extension" not in sys.modules and "CUDA_HOME" not in os.environ:
            os.environ["CUDA_HOME"] = cuda_home  # so that its import-time guess is ours, not a bad one
            try:
                from torch.utils import cpp_extension
            finally:
                os.environ.pop("CUDA_HOME", None)
        from torch.utils import cpp_extension

        if _env_users == 0:
            _env_saved = (cpp_extension.CUDA_HOME, os.environ.get("PATH", ""))
            cpp_extension.CUDA_HOME = cuda_home
            ninja_dir = _ninja_dir()
            if ninja_dir and shutil.which("ninja") is None:
                os.environ["PATH"] = ninja_dir + os.pathsep + _env_saved[1]
        _env_users += 1
    try:
        yield cpp_extension
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0 and _env_saved is not None:
                cpp_extension.CUDA_HOME, os.environ["PATH"] = _env_saved
                _env_saved = None


def _link_flags(cuda_home: str, work: Path) -> list[str]:
    """Extra linker flags so `-lcudart` resolves: the toolkit's libcudart.so when there is one,
    else the runtime torch loads from the nvidia wheels, through a libcudart.so link made
    inside the build directory (never in site-packages)."""
    for sub in ("lib64", "lib"):
        if (Path(cuda_home) / sub / "libcudart.so").exists():
            return []
    wheel_dir = _cudart_dir()
    if wheel_dir is None:
        return []  # the link fails and the log says why
    real = sorted(wheel_dir.glob("libcudart.so.*"))[0]
    link_dir = work / "_link"
    link_dir.mkdir(exist_ok=True)
    (link_dir / "libcudart.so").symlink_to(real)
    return [f"-L{link_dir}", f"-Wl,-rpath,{wheel_dir}"]


def _compile(name: str, sources: dict[str, bytes], archs: list[str], key: str, work: Path, verbose: bool) -> tuple[ModuleType, dict]:
    """Compile and link into `work` (a fresh directory); returns the module and the manifest."""
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise RuntimeError("no CUDA toolkit found (install one with nvcc, or set CUDA_HOME)")
    src_dir = work / "src"
    src_dir.mkdir()
    for rel, data in sources.items():  # build from a snapshot: what was hashed is what is built
        (src_dir / rel).write_bytes(data)
    compiled = [str(src_dir / rel) for rel in OPS[name] if rel.endswith((".cpp", ".cu"))]
    module_name = f"gencbm_{name}_{key[:12]}"
    started = time.monotonic()
    with _build_environment(cuda_home) as cpp_extension:
        module = cpp_extension.load(
            name=module_name,
            sources=compiled,
            extra_cflags=list(CXX_FLAGS),
            extra_cuda_cflags=list(NVCC_FLAGS) + _gencode_flags(archs),
            extra_ldflags=_link_flags(cuda_home, work),
            extra_include_paths=[str(src_dir)],
            build_directory=str(work),
            verbose=verbose,
            with_cuda=True,
        )
    import torch

    manifest = {
        "op": name,
        "key": key,
        "module": module.__name__,  # torch may have suffixed it (_v1, ...) when rebuilt in one process
        "library": Path(module.__file__).name,
        "archs": archs,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nvcc": _nvcc_version(cuda_home),
        "cuda_home": cuda_home,
        "seconds": round(time.monotonic() - started, 1),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (work / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return module, manifest


def _build(name: str, sources_dir: Path | None, archs: list[str] | None, verbose: bool = False) -> tuple[ModuleType | None, dict, bool]:
    """Make sure the cache entry of `name` exists, building it if needed.

    Returns (module or None when it was already built and not imported, manifest, built_now).
    """
    src = _read_sources(name, sources_dir or kernels_dir())
    archs = list(archs) if archs is not None else arch_list()
    key = _key_for(name, src, archs)
    entry = _entry_dir(name, key)
    manifest = _read_manifest(entry)
    if manifest is not None:
        return None, manifest, False
    problems = _problems()
    if problems:
        raise OpBuildError(f"cannot build CUDA op {name!r}: {'; '.join(problems)}")
    root = entry.parent
    with _build_lock(root / f"{entry.name}.lock", _lock_timeout(), f"CUDA op {name!r}"):
        manifest = _read_manifest(entry)  # someone else may have built it while we waited
        if manifest is not None:
            return None, manifest, False
        for stale in root.glob(f"{entry.name}.tmp-*"):  # left by killed builds; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if entry.exists():  # not a complete entry (no manifest or library): replace it
            shutil.rmtree(entry, ignore_errors=True)
        log = root / f"{entry.name}.log"
        work = Path(tempfile.mkdtemp(prefix=f"{entry.name}.tmp-", dir=root))
        try:
            try:
                module, manifest = _compile(name, src, archs, key, work, verbose)
            except Exception as e:  # compiler errors come as RuntimeError with the ninja output
                text = str(e) or type(e).__name__
                log.write_text(
                    f"building CUDA op {name!r} (key {key}, archs {';'.join(archs)}, CUDA_HOME {find_cuda_home()})\n"
                    f"in {work}\n\n{text}\n"
                )
                raise OpBuildError(f"building CUDA op {name!r} failed: {_summary(text)} (full log: {log})") from None
            os.replace(work, entry)  # atomic: the entry appears complete or not at all
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            log.unlink()
    return module, manifest, True


# ---------------------------------------------------------------------------------------------
# Public API.


def load_op(name: str) -> ModuleType:
    """The compiled module of CUDA op `name`, built on first use; raises OpBuildError.

    A failure is remembered for the life of the process: later calls raise it again at once.
    """
    with _state_lock:
        if name in _loaded:
            return _loaded[name]
        if name in _failed:
            raise _failed[name]
        try:
            module, manifest, _ = _build(name, None, None)
            if module is None:
                module = _import_entry(name, _entry_dir(name, manifest["key"]), manifest)
        except OpBuildError as e:
            _failed[name] = e
            raise
        except Exception as e:  # anything unexpected still becomes one clear line
            err = OpBuildError(f"cannot build CUDA op {name!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            _failed[name] = err
            raise err from None
        _loaded[name] = module
        return module


def try_load_op(name: str) -> ModuleType | None:
    """`load_op`, but None on failure, with a warning the first time only (callers then use the reference)."""
    try:
        return load_op(name)
    except OpBuildError as e:
        with _state_lock:
            first = name not in _warned
            _warned.add(name)
        if first:
            warnings.warn(f"{e}; using the reference implementation instead", RuntimeWarning, stacklevel=3)
        return None


def build_op(
    name: str,
    compile_only: bool = False,
    *,
    sources_dir: str | os.PathLike | None = None,
    archs: list[str] | None = None,
    verbose: bool = False,
) -> dict:
    """Build (compile and link) op `name` into the cache, as `gencbm doctor --build-ops` does.

    Needs no GPU: the architectures come from `archs`, $TORCH_CUDA_ARCH_LIST, the visible GPUs or
    DEFAULT_ARCHS. The library is loaded into this process once (which checks the link; it does
    not touch a device). With compile_only=False the op is also registered for `load_op` when it
    was built from the default sources. Returns the manifest plus "path" and "built_now".
    Raises OpBuildError.
    """
    try:
        module, manifest, built_now = _build(name, Path(sources_dir) if sources_dir else None, archs, verbose)
    except OpBuildError:
        raise
    except Exception as e:
        raise OpBuildError(f"cannot build CUDA op {name!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    entry = _entry_dir(name, manifest["key"])
    if not compile_only and sources_dir is None and archs is None:
        with _state_lock:
            if name not in _loaded:
                _loaded[name] = module if module is not None else _import_entry(name, entry, manifest)
            _failed.pop(name, None)
    return {**manifest, "path": str(entry), "built_now": built_now}


def op_status(name: str) -> dict:
    """What `gencbm doctor` reports about op `name`. Never compiles.

    Keys: op, built (a complete cache entry exists for the current sources/toolchain/archs),
    buildable (a build can be attempted here), loaded (imported in this process), reason (why
    not buildable or why loading failed; "" otherwise), path (the cache entry), key, archs,
    cuda_home, gpu (a CUDA device is visible), and log (only when a build of exactly these
    sources failed: its log).
    """
    import torch

    status: dict = {
        "op": name, "built": False, "buildable": False, "loaded": name in _loaded, "reason": "",
        "path": None, "key": None, "archs": None, "cuda_home": find_cuda_home(),
        "gpu": bool(torch.cuda.is_available()),
    }
    problems = _problems()
    status["buildable"] = not problems
    try:
        archs = arch_list()
        key = cache_key(name, archs=archs)
        entry = _entry_dir(name, key)
        status.update(archs=archs, key=key, path=str(entry), built=_read_manifest(entry) is not None)
        log = entry.parent / f"{entry.name}.log"
        if log.is_file():
            status["log"] = str(log)  # the last failed build of these sources
    except OpBuildError as e:
        problems.append(str(e))
        status["buildable"] = False
    if name in _failed:
        problems.append(str(_failed[name]))
    status["reason"] = "; ".join(problems)
    return status


def _forget(name: str | None = None) -> None:
    """Drop what this process remembers about op `name` (all ops when None); for tests."""
    with _state_lock:
        for d in (_loaded, _failed):
            if name is None:
                d.clear()
            else:
                d.pop(name, None)
        if name is None:
            _warned.clear()
        else:
            _warned.discard(name)

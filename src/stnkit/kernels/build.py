"""Build, verify and load the CPU kernel (``warp.cpp`` + ``tps_grid.cpp``) with ``torch.utils.cpp_extension``.

``load()`` returns the compiled module, or None when it cannot be built (no compiler or ninja, a build error) or
is disabled with the environment variable ``STNKIT_DISABLE_EXT=1``; callers then use the reference path (torch
ops). It is never built at import, only on first use. The first build prints one line to stderr (it takes about a
minute); a failure prints one warning line, once per process, and is remembered for the process.

The build is cached in ``$STNKIT_EXT_DIR`` (default ``~/.cache/stnkit/ext``) per torch and Python version and per
content hash of the C++ sources, flags and torch installation (the sources are copied there), so later processes
only load it (well under a second), two checkouts of the same code in one environment share one build, and two
environments never rebuild each other's library (a rebuild would overwrite a library that a running process has
loaded).

A library is loaded only if it matches its manifest (``<name>.so.manifest``: size and sha256), written atomically
after a successful build: mapping a truncated ``.so`` kills the process with SIGBUS, so a missing manifest or a
mismatch means a rebuild (the old files are removed first), never a load.

Builds and loads of one folder are serialised by an OS file lock (``fcntl.flock`` on ``.stnkit.lock``), which the
kernel releases when its holder dies. torch's own build lock (a file named ``lock`` that its holder deletes when
done) stays behind when a process is killed mid-build, and then every later ``cpp_extension.load`` of that folder
waits for it forever; holding ours, no other stnkit process can be inside a build, so such a file is stale and is
removed before loading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["build_error", "load"]

_lock = threading.Lock()
_state: dict[str, object] = {}  # "module" or "error", set once per process
_SOURCES = ("warp.cpp", "tps_grid.cpp")


def _build_dir() -> Path:
    root = Path(os.environ.get("STNKIT_EXT_DIR", Path.home() / ".cache" / "stnkit" / "ext"))
    tag = f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}".replace("+", "_").replace(".", "")
    return root / tag


def _variant() -> tuple[str, list[str]]:
    """Return the module name and compiler flags for this CPU.

    ``-fopenmp`` makes ``at::parallel_for`` use torch's OpenMP threads (the symbols resolve to the libgomp torch
    already loaded); ``-fno-trapping-math`` lets GCC vectorise ``floor``. AVX2 + FMA (gathers) when torch itself
    dispatches to AVX2 or AVX-512 kernels on this CPU, the compiler's baseline otherwise.
    """
    flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
    capability = ""
    with contextlib.suppress(Exception):
        capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() in ("x86_64", "amd64") and capability in ("AVX2", "AVX512"):
        return "stnkit_warp_avx2", [*flags, "-mavx2", "-mfma"]
    return "stnkit_warp", flags


def _stage_sources(name: str, flags: list[str]) -> tuple[Path, list[str]]:
    """Copy the C++ sources into a build folder named by their content hash; return it and the copied paths."""
    here = Path(__file__).parent
    originals = [here / source for source in _SOURCES]
    # torch's include paths (this environment's site-packages) go into the build file: a build per installation
    digest = hashlib.sha256(" ".join([*flags, str(Path(torch.__file__).resolve().parent)]).encode())
    for path in originals:
        digest.update(path.read_bytes())
    build = _build_dir() / f"{name}-{digest.hexdigest()[:12]}"
    (build / "src").mkdir(parents=True, exist_ok=True)
    staged = []
    for path in originals:
        target = build / "src" / path.name
        if not target.exists() or target.read_bytes() != path.read_bytes():
            _write_atomic(target, path.read_bytes())  # a concurrent build sees the old or the new file
        staged.append(str(target))
    return build, staged


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _library(build: Path, name: str) -> Path:
    return build / f"{name}.so"


def _manifest(library: Path) -> Path:
    return library.with_name(library.name + ".manifest")


def _fingerprint(library: Path) -> dict[str, object]:
    data = library.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _verified(library: Path) -> bool:
    """Return whether ``library`` exists and matches the manifest written after its build."""
    try:
        expected = json.loads(_manifest(library).read_text())
        return library.stat().st_size == expected["size"] and _fingerprint(library) == expected
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _discard(build: Path, library: Path) -> None:
    """Remove an unverified library and its build products, so that cpp_extension rebuilds it from scratch."""
    for path in (library, _manifest(library), build / "build.ninja", build / ".ninja_deps", build / ".ninja_log"):
        path.unlink(missing_ok=True)
    for obj in build.glob("*.o"):
        obj.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(build: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on ``build`` and clear a stale torch build lock (see the module docstring).

    Where ``fcntl`` is missing (Windows) there is no OS lock and nothing is removed: torch's lock works as it does.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(build / ".stnkit.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another live process builds or loads this folder
        try:
            (build / "lock").unlink(missing_ok=True)  # stale: its holder was killed mid-build
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_and_load(verbose: bool) -> ModuleType:
    from torch.utils import cpp_extension  # heavy import, only when the kernel is wanted

    name, flags = _variant()
    build, sources = _stage_sources(name, flags)
    library = _library(build, name)
    with _exclusive(build):
        if not _verified(library):
            _discard(build, library)
            print("stnkit: building the CPU kernel (once, ~1 min) ...", file=sys.stderr, flush=True)
        module = cpp_extension.load(
            name=name, sources=sources, build_directory=str(build), extra_cflags=flags, verbose=verbose
        )
        if not _manifest(library).exists():
            _write_atomic(_manifest(library), json.dumps(_fingerprint(library)).encode())
    return module


def load(verbose: bool = False) -> ModuleType | None:
    """Return the compiled kernel module, building it on the first call; None if unavailable.

    Example:
        >>> module = load()  # None without a compiler, or with STNKIT_DISABLE_EXT=1
    """
    if "module" in _state:
        return _state["module"]  # type: ignore[return-value]
    if "error" in _state:
        return None
    if os.environ.get("STNKIT_DISABLE_EXT", "") not in ("", "0"):
        _state["error"] = "disabled by STNKIT_DISABLE_EXT"
        return None
    with _lock:
        if "module" in _state or "error" in _state:
            return _state.get("module")  # type: ignore[return-value]
        try:
            module = _build_and_load(verbose)
        except Exception as exc:  # noqa: BLE001 - any build/load failure means "use the reference path"
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            _state["error"] = reason
            warnings.warn(f"stnkit: the CPU kernel is unavailable, using the reference path ({reason[:300]})",
                          RuntimeWarning, stacklevel=3)
            return None
        _state["module"] = module
        return module


def build_error() -> str | None:
    """Return why the kernel is unavailable (None if it loaded or was never requested).

    Example:
        >>> build_error() is None or isinstance(build_error(), str)
        True
    """
    return _state.get("error")  # type: ignore[return-value]

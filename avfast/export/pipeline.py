"""Export, check, compare, time and (optionally) build a TensorRT engine, then put the results in place.

Everything is produced in a staging folder inside the output folder and renamed into place only when
the checks pass (the manifest last), so an interrupted or failed export leaves nothing half-written.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..models.weights import atomic_write_bytes, weights_checksum
from ..runtime import RuntimeUnavailable, load
from ..runtime.manifest import FORMAT, VERSION, read_manifest
from ..runtime.torch_runtimes import EagerDenoiser
from . import data
from .._deps import missing_packages
from .._precision import QUANTIZED_PRECISIONS
from .checks import check_graph
from .graph import check_options, export_onnx
from .parity import BOUNDS, ParityError, measure_parity, parity_inputs
from .rewrite import PASSES as REWRITE_PASSES
from .timing import machine_name, ms_per_fe

# ONNX Runtime's CPU provider has no bf16 kernels (Gemm, Conv): a bf16 graph is checked, not run, on CPU.
CPU_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ExportOptions:
    out: Path
    name: str | None = None
    preset: str | None = None
    batch: int = 1
    frames: int | None = None
    audio_length: int | None = None
    precision: str = "fp32"
    opset: int | None = None
    dynamic_batch: tuple[int, int, int] | None = None  # (min, opt, max)
    trt: bool = False
    trt_workspace_gib: float = 4.0
    bench_calls: int = 10
    runtimes: tuple[str, ...] | None = None  # None: every runtime usable here except compile
    weights_source: str = "unknown"
    progress: bool = True
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    calibration: Any = None  # int8: avfast.export.int8.CalibrationSettings (None: its defaults)


@dataclass
class ExportResult:
    manifest: dict[str, Any]
    files: list[Path]
    trt_error: str | None = None


def default_name(preset: str | None, precision: str, batch: int | None, frames: int) -> str:
    return f"{preset or 'model'}-{precision}-{'bdyn' if batch is None else f'b{batch}'}-f{frames}"


def check_name(name: str) -> str:
    """A file name stem for the export's files: one plain name, not a path (nothing outside --out)."""
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or name.startswith(".")
            or any(c in name for c in "/\\\0") or len(name) > 200):
        raise ValueError(f"--name must be a plain file name stem (no folder, no '/', not starting with '.', at most "
                         f"200 characters), got {name!r}")
    return name


# A staging folder is .<name>.<pid>-<random>.staging: a later export removes those whose process is gone
# (a killed export), never a live one's.
_STAGING_SUFFIX = ".staging"


def _staging_owner(folder: Path) -> int | None:
    parts = folder.name[: -len(_STAGING_SUFFIX)].rsplit(".", 1)
    pid = parts[-1].split("-", 1)[0] if len(parts) == 2 else ""
    return int(pid) if pid.isdigit() else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path, max_age_s: float = 24 * 3600) -> list[Path]:
    """Remove the staging folders in `out` left by killed exports: those whose process is gone, and any
    without an owner (older avfast) not touched for `max_age_s`. Returns what was removed."""
    import time

    removed = []
    try:
        candidates = [p for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(_STAGING_SUFFIX)]
    except OSError:
        return removed
    for folder in candidates:
        if not folder.is_dir() or folder.is_symlink():
            continue
        pid = _staging_owner(folder)
        try:
            stale = (not _process_alive(pid)) if pid is not None else time.time() - folder.stat().st_mtime > max_age_s
        except OSError:
            continue
        if stale and pid != os.getpid():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _staging(out: Path, name: str) -> Path:
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"the output folder {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}-", suffix=_STAGING_SUFFIX, dir=out))
    except OSError as e:
        raise ValueError(f"the output folder {out} cannot be written ({e.strerror or e})") from None


def _bench_runtimes(options: ExportOptions, engine: bool) -> list[str]:
    if options.runtimes is not None:
        return list(options.runtimes)
    int8 = options.precision in QUANTIZED_PRECISIONS
    names = [] if int8 else ["eager-reference", "eager-fused"]
    if options.precision in CPU_PRECISIONS:
        names.append("onnxruntime")
    if torch.cuda.is_available() and not int8:
        names.append("onnxruntime-cuda")
    if engine:
        names.append("tensorrt")
    if options.precision in ("fp32", "int8"):
        try:
            import openvino  # noqa: F401  (only to see whether it is installed)

            names.append("openvino")
        except ImportError:
            pass
    return names


def check_trt_precision(precision: str) -> None:
    """Raises ValueError for a precision TensorRT engines are not built from (int8)."""
    if precision in QUANTIZED_PRECISIONS:
        raise ValueError("--trt with --precision int8: int8 is calibrated and checked for the CPU runtimes "
                         "(onnxruntime, openvino); build TensorRT engines from fp32/fp16/bf16 exports")


def why_no_trt_build() -> str | None:
    """None when a TensorRT engine can be built here, else why not: the package is not installed (found, not
    imported), or torch sees no CUDA GPU. What `_build_trt` would find only after the export, its checks
    and its parity runs, so callers refuse before any work."""
    missing = missing_packages(["tensorrt"])
    if missing:
        return f"it needs {missing}"
    if not torch.cuda.is_available():
        return (f"TensorRT builds its engine on a CUDA GPU, and torch sees none here (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'no'})")
    return None


def run_export(model: torch.nn.Module, options: ExportOptions) -> ExportResult:
    """The whole `python -m avfast.export` pipeline for one model. Raises ValueError (bad options, failed
    checks, ParityError) with nothing written. A TensorRT that fails to load after the checked ONNX was
    written is reported in `trt_error` (callers refuse a missing TensorRT or GPU before, with
    `why_no_trt_build`)."""
    opset = check_options(options.precision, options.opset, options.batch,
                          options.dynamic_batch[::2] if options.dynamic_batch else None)
    int8 = options.precision in QUANTIZED_PRECISIONS
    if options.trt:
        check_trt_precision(options.precision)
    cfg = model.config
    frames = cfg.frames if options.frames is None else options.frames
    audio_length = cfg.audio_length if options.audio_length is None else options.audio_length
    static_batch = None if options.dynamic_batch else options.batch
    name = check_name(options.name) if options.name is not None else default_name(options.preset, options.precision,
                                                                                   static_batch, frames)
    out = Path(options.out)
    staging = _staging(out, name)
    steps = tqdm(total=5 + int(options.trt) + 2 * int8, desc=f"export {name}", disable=not options.progress,
                 leave=False)
    try:
        steps.set_postfix_str("torch.onnx.export")
        onnx_path = staging / f"{name}.onnx"
        float_path = staging / f"{name}.fp32.onnx" if int8 else onnx_path
        info = export_onnx(model, float_path, batch=options.batch, frames=frames, audio_length=audio_length,
                           precision="fp32" if int8 else options.precision, opset=opset,
                           dynamic_batch=options.dynamic_batch[::2] if options.dynamic_batch else None)
        steps.update()
        quantization = None
        if int8:
            quantization = _quantize(model, float_path, onnx_path, frames, audio_length, static_batch, options, steps)
            info.external_data = quantization.pop("external_data")
        steps.set_postfix_str("checks")
        operators = check_graph(onnx_path, quantized=int8)
        steps.update()

        steps.set_postfix_str("parity")
        B = options.dynamic_batch[1] if options.dynamic_batch else options.batch
        reference_model = copy.deepcopy(model).to("cpu", torch.float32).eval()
        reference = EagerDenoiser(reference_model, "fused")
        inputs = parity_inputs(reference_model, B, frames, audio_length)
        parity: dict[str, Any] = {}
        if options.precision in CPU_PRECISIONS:
            first_step = (quantization or {}).get("first_step") or False
            for runtime_name in ("onnxruntime",) + (("openvino",) if int8 and _have("openvino") else ()):
                runtime = load(runtime_name, onnx_path, first_step=first_step)
                p = measure_parity(runtime, reference, inputs, options.precision,
                                   runtime_name, "torch eager fp32 (fused ops)")
                parity[runtime_name] = p.as_dict()
                if not p.passed:
                    raise ParityError(f"parity failed, nothing was written: {p}")
                if first_step:   # the first-step graph, on the first call's timesteps (t = T)
                    T = float(reference_model.config.num_train_steps)
                    at_T = (*inputs[:2], torch.full_like(inputs[2], T), torch.full_like(inputs[3], T))
                    p = measure_parity(runtime, reference, at_T, options.precision,
                                       f"{runtime_name} first-step graph", "torch eager fp32 (fused ops)")
                    first_step.setdefault("parity", {})[runtime_name] = p.as_dict()
                    if not p.passed:
                        raise ParityError(f"parity of the first-step graph failed, nothing was written: {p}")
        else:
            parity["onnxruntime"] = {"skipped": "ONNX Runtime's CPU provider has no bf16 kernels (Gemm, Conv); "
                                                "bf16 parity is measured on TensorRT (--trt on a GPU)"}
        steps.update()

        engine_path, trt_error, trt_info = None, None, None
        if options.trt:
            steps.set_postfix_str("tensorrt build")
            try:
                engine_path, trt_info = _build_trt(onnx_path, options)
                trt_runtime = load("tensorrt", engine_path)
                p = measure_parity(trt_runtime, reference, inputs, options.precision,
                                   "tensorrt", "torch eager fp32 (fused ops)")
                parity["tensorrt"] = p.as_dict()
                if not p.passed:
                    raise ParityError(f"TensorRT parity failed, nothing was written: {p}")
            except RuntimeUnavailable as e:
                trt_error = str(e)
                engine_path = None
            steps.update()

        steps.set_postfix_str("ms/FE")
        timings = _benchmark(model, _bench_runtimes(options, engine_path is not None), onnx_path, engine_path,
                             inputs, options)
        steps.update()

        manifest = {
            "format": FORMAT, "version": VERSION, "name": name,
            "onnx": onnx_path.name, "external_data": info.external_data,
            "engine": engine_path.name if engine_path else None,
            "preset": options.preset, "config": cfg.replace(frames=frames, audio_length=audio_length).to_dict(),
            "weights": {"source": options.weights_source, "sha256": weights_checksum(model.state_dict())},
            "precision": options.precision, "opset": info.opset,
            "exporter": f"torch.onnx.export(dynamo=True, optimize=True), torch {torch.__version__}",
            "batch": info.batch, "batch_range": list(info.batch_range),
            "tensorrt_profile": list(options.dynamic_batch) if options.dynamic_batch else None,
            "inputs": info.inputs, "outputs": info.outputs,
            "operators": dict(sorted(operators.items())), "nodes": sum(operators.values()),
            "rewrites": info.rewrites,
            "onnx_sha256": _sha256(onnx_path),
            "parity": parity, "parity_bounds": BOUNDS,
            "ms_per_fe": {"machine": machine_name(), "batch": B, "calls": options.bench_calls,
                          "statistic": "median after 2 warm-up calls", "runtimes": timings},
            "tensorrt": trt_info if trt_info else ({"error": trt_error} if trt_error else None),
        }
        if quantization is not None:
            manifest["quantization"] = quantization
        _write_readable(staging / f"{name}.json", (json.dumps(manifest, indent=1) + "\n").encode())
        steps.update()
        first = (quantization or {}).get("first_step") or {}
        extra = [f for f in (first.get("external_data"), first.get("onnx")) if f]
        files = _move_into_place(staging, out, name, info.external_data, engine_path, extra)
        return ExportResult(manifest, files, trt_error)
    finally:
        steps.close()
        shutil.rmtree(staging, ignore_errors=True)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _quantize(model, float_path: Path, onnx_path: Path, frames: int, audio_length: int, batch: int | None,
              options: ExportOptions, steps) -> dict:
    """int8: calibration data along the sampler's trajectory, NNCF's QDQ graph at `onnx_path`, checked to
    be int8; with `first_step_clips` > 0 also the first-step graph `<name>.first-step.onnx` next to it
    (avfast.export.int8); the fp32 graph is removed. Returns the manifest's "quantization" entry."""
    from .int8 import CalibrationSettings, check_int8_graph, collect_calibration, first_step_t_min, quantize_onnx

    settings = options.calibration or CalibrationSettings()
    steps.set_postfix_str("int8 calibration data")
    calibration = collect_calibration(model, frames, audio_length, settings)
    first = collect_calibration(model, frames, audio_length, settings, first_step=True) \
        if settings.first_step_clips else None
    steps.update()
    steps.set_postfix_str("int8 quantisation (nncf)")
    info = quantize_onnx(float_path, onnx_path, calibration, batch, progress=options.progress)
    first_step = None
    if first is not None:
        first_path = onnx_path.with_name(onnx_path.stem + ".first-step.onnx")
        first_info = quantize_onnx(float_path, first_path, first, batch, progress=options.progress)
        first_stats = check_int8_graph(first_path)
        first_step = {"onnx": first_path.name, "external_data": first_info["external_data"],
                      "t_min": first_step_t_min(first), "calibration": first.describe(),
                      "graph": {"int8_layers": first_stats["int8_layers"],
                                "compute_layers": first_stats["compute_layers"]},
                      "onnx_sha256": _sha256(first_path)}
    for path in (float_path, float_path.with_name(float_path.name + ".data")):
        path.unlink(missing_ok=True)
    stats = check_int8_graph(onnx_path)
    steps.update()
    return {**info, "calibration": calibration.describe(), "first_step": first_step,
            "graph": {"quantized_ops": stats["quantized_ops"], "int8_layers": stats["int8_layers"],
                      "compute_layers": stats["compute_layers"], "float_layers": stats["float_layers"]}}


def _build_trt(onnx_path: Path, options: ExportOptions) -> tuple[Path, dict]:
    from ..runtime.trt import build_engine

    engine = build_engine(onnx_path, dynamic_batch=options.dynamic_batch, workspace_gib=options.trt_workspace_gib)
    path = onnx_path.with_suffix(".engine")
    _write_readable(path, engine)
    import tensorrt

    return path, {"version": tensorrt.__version__, "gpu": torch.cuda.get_device_name(0),
                  "strongly_typed": True, "cuda_graph": options.dynamic_batch is None,
                  "profile": list(options.dynamic_batch) if options.dynamic_batch else None}


def _benchmark(model, names: list[str], onnx_path: Path, engine_path: Path | None, inputs, options) -> dict:
    timings: dict[str, Any] = {}
    for name in names:
        if name == "tensorrt" and engine_path is None:
            timings[name] = "unavailable: no engine was built (export with trt=True)"
            continue
        try:
            if name in ("eager-reference", "eager-fused", "compile"):
                from ..runtime import create

                device = torch.device(options.device)
                runtime = create(name, copy.deepcopy(model).to(device, torch.float32).eval())
                label = f"{name} fp32"
            else:
                runtime = load(name, engine_path if name == "tensorrt" else onnx_path)
                device = runtime.device
                label = f"{name} {options.precision}"
            args = tuple(x.to(device) for x in inputs)
            timings[label] = round(ms_per_fe(runtime, args, calls=options.bench_calls), 3)
        except RuntimeUnavailable as e:
            timings[name] = f"unavailable: {e}"
    return timings


def _write_readable(path: Path, data: bytes) -> None:
    """atomic_write_bytes, with the permissions of an ordinary new file (its temporary file is private)."""
    atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _move_into_place(staging: Path, out: Path, name: str, external: str | None, engine: Path | None,
                     extra: list[str] = ()) -> list[Path]:
    # Weights before the graph that names them, the manifest (which says the export is complete) last;
    # `extra`: other files the manifest names (an int8 export's first-step graph), before it.
    order = list(extra) + ([external] if external else []) + [f"{name}.onnx"] + ([engine.name] if engine else []) + [f"{name}.json"]
    moved = []
    for fname in order:
        os.replace(staging / fname, out / fname)
        moved.append(out / fname)
    return moved


# ------------------------------------------------------------------------------------ cached exports
def default_cache_dir() -> Path:
    return Path(os.environ.get("AVFAST_EXPORT_CACHE", Path.home() / ".cache" / "avfast" / "export"))


def export_cached(model: torch.nn.Module, runtime: str, *, batch_size: int = 1, frames: int | None = None,
                  audio_length: int | None = None, precision: str = "fp32", dynamic_batch: bool = False,
                  cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The file `runtime` loads for `model` (.onnx, or .engine for tensorrt), exported and checked once per
    weights checksum and options, then reused."""
    cfg = model.config
    frames = cfg.frames if frames is None else int(frames)
    audio_length = cfg.audio_length if audio_length is None else int(audio_length)
    trt = runtime == "tensorrt"
    if trt:  # before any work, not after the export, its checks and parity runs
        why = why_no_trt_build()
        if why is not None:
            raise RuntimeUnavailable(f"the tensorrt runtime cannot build an engine here: {why}")
    profile = None
    if dynamic_batch:
        lo, opt, hi = _preset_profile(cfg).get("dynamic_batch", [1, 2, 16])
        hi = max(hi, batch_size)
        profile = (lo, min(max(opt, lo), hi), hi)
    fields = {"weights": weights_checksum(model.state_dict()), "config": cfg.to_dict(), "batch": batch_size,
              "frames": frames, "audio": audio_length, "precision": precision, "profile": profile, "trt": trt,
              "rewrites": list(REWRITE_PASSES)}  # an export made before a new graph rewrite is not reused
    if precision in QUANTIZED_PRECISIONS:  # a changed calibration or float-layer choice is a new export
        from dataclasses import asdict

        from .int8 import KEEP_FLOAT, CalibrationSettings

        fields["int8"] = {"calibration": asdict(CalibrationSettings()), "keep_float": list(KEEP_FLOAT)}
    key = json.dumps(fields, sort_keys=True)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{precision}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    target = folder / f"{name}.{'engine' if trt else 'onnx'}"
    if target.is_file() and (read_manifest(target) or {}).get("name") == name:
        return target
    result = run_export(model, ExportOptions(out=folder, name=name, batch=batch_size, frames=frames,
                                             audio_length=audio_length, precision=precision, dynamic_batch=profile,
                                             trt=trt, bench_calls=1, runtimes=(), progress=progress,
                                             weights_source="avfast.runtime.create"))
    if result.trt_error:
        raise RuntimeUnavailable(result.trt_error)
    return target


def _preset_profile(cfg) -> dict:
    from ..models.config import PRESETS

    for preset, preset_cfg in PRESETS.items():
        if preset_cfg.to_dict() == cfg.to_dict():
            return data.profile(preset)
    return {}

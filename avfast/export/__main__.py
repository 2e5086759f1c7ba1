"""python -m avfast.export [--preset tiny|tiny-latent|paper-128|paper-512] [--checkpoint DIR] [--trt]
[--precision fp32|fp16|bf16|int8] [--batch N] [--frames F] [--audio-length T] [--dynamic-batch] [--opset N]
[--out DIR] [--bench-steps N] [--runtimes A,B]

With no arguments: the package's trained default model (a distilled `tiny-latent` embedded in the package;
`--checkpoint default:teacher` its teacher) into export/out/tiny-latent-fp32-b1-f18.onnx under the current
directory, checked, compared and timed. Any other --preset without --checkpoint is exported with stand-in
random weights. --precision int8: the fp32 graph quantised by NNCF on calibration data recorded along the
sampler's trajectory (avfast.export.int8; pip install "avfast[int8]"), checked to compute in int8,
compared on ONNX Runtime and OpenVINO.
Exit status: 0 done; 1 a check failed or --trt could not build (the checked ONNX is still written);
2 bad input or a missing package (--trt without TensorRT or a CUDA GPU included: refused before any
work). Errors are one sentence on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._cli import Parser

PROG = "python -m avfast.export"


class CliError(Exception):
    """Bad input: one sentence, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from ..models.config import PRESETS
    from .data import DEFAULT_OUT
    from .graph import PRECISIONS

    p = Parser(prog=PROG, description="Export the joint U-Net to ONNX (and TensorRT with --trt), "
                                "check it, compare it with PyTorch and time it per runtime.")
    p.add_argument("--preset", choices=list(PRESETS),
                   help=f"model preset (default: the checkpoint's, else {DEFAULT_PRESET}). Without --checkpoint, "
                        f"{DEFAULT_PRESET} is the package's trained default model and any other preset gets "
                        f"stand-in random weights (seed 0)")
    p.add_argument("--checkpoint", metavar="DIR", help="model folder (config.json + model.safetensors); default: "
                   "the package's trained default model; default:teacher the model it was distilled from")
    p.add_argument("--trt", action="store_true", help="also build and time a TensorRT engine (needs a GPU)")
    p.add_argument("--precision", choices=PRECISIONS, help="graph precision (default: the preset's profile; int8: "
                   "post-training quantisation with NNCF)")
    p.add_argument("--batch", type=int, help="static batch of the graph (default: the profile's)")
    p.add_argument("--frames", type=int, help="video frames (default: the profile's)")
    p.add_argument("--audio-length", type=int, help="mel frames (default: frames x the profile's mel/video ratio)")
    p.add_argument("--dynamic-batch", action="store_true", help="batch as a graph dimension (TensorRT profile "
                   "from avfast/export/profiles.json)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18; 22 for bf16)")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                   help="output folder (default: %(default)s under the current directory)")
    p.add_argument("--name", help="file name stem (default: <preset>-<precision>-b<batch>-f<frames>)")
    p.add_argument("--bench-steps", type=int, default=10, metavar="N", help="timed calls per runtime (0: none)")
    p.add_argument("--runtimes", help="comma-separated runtimes to time (default: all usable here but compile)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise CliError(f"{name} must be an integer >= 1, got {value}")


def _check_numbers(args) -> None:
    for name in ("batch", "frames", "audio_length"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.bench_steps < 0:
        raise CliError(f"--bench-steps must be >= 0, got {args.bench_steps}")
    if args.opset is not None:
        from .graph import check_options

        check_options(args.precision or "fp32", args.opset, 1, None)


DEFAULT_PRESET = "tiny-latent"  # the package's default model (a distilled tiny-latent)


def _load_model(args):
    """(model, preset name, weights source)."""
    from .. import models
    from .weights import stand_in_model

    if args.checkpoint is not None:
        # "default" / "default:teacher" name the shipped models, as for Pipeline.from_pretrained
        try:
            folder = models.checkpoint_folder(args.checkpoint)
        except FileNotFoundError as e:  # DefaultModelUnavailable too
            raise CliError(f"--checkpoint: {e}") from None
        named = folder != Path(args.checkpoint)
        model = models.from_pretrained(folder)
        preset = next((n for n, c in models.PRESETS.items() if _same_architecture(c, model.config)), None)
        if args.preset is not None and preset != args.preset:
            raise CliError(f"--checkpoint {args.checkpoint} holds a {preset or 'custom'} model, not the --preset "
                           f"{args.preset} it was given with (leave out --preset to export the checkpoint as it is)")
        return model, preset, f"the package's {args.checkpoint} model" if named else f"checkpoint {folder}"
    preset = args.preset or DEFAULT_PRESET
    if preset == DEFAULT_PRESET:
        try:
            return models.default(), DEFAULT_PRESET, "the package's trained default model"
        except models.DefaultModelUnavailable:
            pass
    model = stand_in_model(preset, seed=0)
    print(f"note: no trained {preset} weights here (pass --checkpoint DIR); exporting the {preset} preset with "
          f"stand-in random weights (seed 0)")
    return model, preset, f"random stand-in weights (preset {preset} initialisation, seed 0, zero layers drawn)"


def _same_architecture(a, b) -> bool:
    from ..models.config import SAMPLING_FIELDS

    # not part of the weights' shapes: the layout, and what a distilled student records about its sampling
    layout = ("frames", "audio_length", "gradient_checkpointing", "dropout", "version", *SAMPLING_FIELDS)
    da, db = a.to_dict(), b.to_dict()
    return all(da.get(k) == db.get(k) for k in {*da, *db} if k not in layout)


def _options(args, model, preset: str, source: str):
    from ..runtime import NAMES
    from .data import profile
    from .pipeline import ExportOptions

    prof = profile(preset) if preset else {}
    cfg = model.config
    frames = args.frames or prof.get("frames", cfg.frames)
    audio = args.audio_length or round(frames * prof.get("audio_length", cfg.audio_length) / prof.get("frames", cfg.frames))
    runtimes = None
    if args.runtimes is not None:
        runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
        unknown = [r for r in runtimes if r not in NAMES]
        if unknown:
            raise CliError(f"--runtimes: unknown runtime(s) {unknown}; expected names from {', '.join(NAMES)}")
        if "tensorrt" in runtimes and not args.trt:  # it times the engine --trt builds: none without it
            raise CliError("--runtimes tensorrt times the engine that --trt builds; add --trt")
    if args.bench_steps == 0:
        runtimes = ()
    dynamic = None
    if args.dynamic_batch:
        lo, opt, hi = prof.get("dynamic_batch", [1, 2, 16])
        if args.batch is not None:  # a given batch becomes the profile's optimum
            opt, hi = args.batch, max(hi, args.batch)
        dynamic = (lo, opt, hi)
    return ExportOptions(out=Path(args.out), name=args.name, preset=preset, batch=args.batch or prof.get("batch", 1),
                         frames=frames, audio_length=audio, precision=args.precision or prof.get("precision", "fp32"),
                         opset=args.opset, dynamic_batch=dynamic, trt=args.trt,
                         trt_workspace_gib=prof.get("trt_workspace_gib", 4), bench_calls=max(args.bench_steps, 1),
                         runtimes=runtimes, weights_source=source, progress=not args.no_progress)


def _check_packages(options) -> None:
    """Every package this export will import, checked together before any work (found, not imported), so
    one line names all that are missing and the one command that installs them, instead of one package
    per attempt (or, for --trt's TensorRT, one after the whole export)."""
    from .._precision import QUANTIZED_PRECISIONS
    from .._deps import missing_packages
    from .pipeline import CPU_PRECISIONS, check_trt_precision

    if options.trt:  # --trt with int8 is refused whatever is installed: say that, not what to install
        check_trt_precision(options.precision)
    needed = ["onnx", "onnxscript"]  # torch.onnx's dynamo exporter and the graph checks
    if options.precision in CPU_PRECISIONS:
        needed.append("onnxruntime")  # the parity check (ONNX Runtime's CPU provider runs no bf16: not for bf16)
    if options.precision in QUANTIZED_PRECISIONS:
        needed.append("nncf")  # the int8 quantisation
    if options.trt:
        needed.append("tensorrt")  # the engine build, its parity check and timing
    missing = missing_packages(needed)
    if missing:
        raise CliError(f"exporting at {options.precision}{' with --trt' if options.trt else ''} needs {missing}")


def _check_trt(options) -> None:
    """--trt where no engine can be built (no CUDA GPU; TensorRT itself is among the packages checked
    above): one line before any work, not exit 1 after the export, its checks and its parity runs."""
    from .pipeline import why_no_trt_build

    why = why_no_trt_build() if options.trt else None
    if why is not None:
        raise CliError(f"--trt: {why}; leave out --trt to export, check and time the ONNX here")


def _check_memory(model, options) -> None:
    """Refuse, in one line, an export whose PyTorch reference run (the parity check's, with the ops as
    their composites) cannot fit in this machine's memory."""
    from .._memory import check_fits
    from ..models.memory import model_peak_bytes

    batch = options.dynamic_batch[1] if options.dynamic_batch else options.batch
    try:
        cfg = model.config.replace(frames=options.frames, audio_length=options.audio_length)
    except ValueError as e:
        raise CliError(f"--frames/--audio-length: {e}") from None
    need = model_peak_bytes(cfg, batch, decomposed=True)
    check_fits(f"exporting at batch {batch}, {options.frames} frames, {options.audio_length} mel steps", need)


def _report(result) -> None:
    m = result.manifest
    for path in result.files:
        print(f"wrote {path}")
    rewrites = ", ".join(f"{k} {v}" for k, v in (m.get("rewrites") or {}).items())
    print(f"graph: {m['nodes']} nodes, opset {m['opset']}, {len(m['operators'])} operator types, all in TensorRT's "
          f"supported list; inputs " + ", ".join(f"{i['name']}{i['shape']}" for i in m["inputs"])
          + (f"; rewritten: {rewrites}" if rewrites else ""))
    q = m.get("quantization")
    if q:
        c, g = q["calibration"], q["graph"]
        print(f"int8: {g['int8_layers']} of {g['compute_layers']} Conv/MatMul/Gemm layers take int8 inputs; kept in "
              f"float: {', '.join(q['kept_float']) or 'none'}; calibration: {c['samples']} denoiser inputs at "
              f"sampler steps {c['recorded_steps']} of {c['settings']['steps']}, tasks {', '.join(c['tasks'])}")
    for runtime, p in m["parity"].items():
        if "skipped" in p:
            print(f"parity {runtime}: not run ({p['skipped']})")
        else:
            print(f"parity {runtime} vs PyTorch fp32: max error relative to the output's scale video "
                  f"{p['video']['relative']:.2e}, audio {p['audio']['relative']:.2e} (bound {p['bound']:.0e}, ok)")
    timings = m["ms_per_fe"]["runtimes"]
    if timings:
        print(f"ms per function evaluation, batch {m['ms_per_fe']['batch']}, on {m['ms_per_fe']['machine']}:")
        for runtime, ms in timings.items():
            print(f"  {runtime:<28} {ms if isinstance(ms, str) else f'{ms:10.2f} ms'}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..runtime import RuntimeUnavailable
    from .pipeline import run_export

    try:
        _check_numbers(args)
        model, preset, source = _load_model(args)
        options = _options(args, model, preset, source)
        _check_packages(options)
        _check_trt(options)
        _check_memory(model, options)
        result = run_export(model, options)
    except (CliError, ValueError, TypeError, FileNotFoundError) as e:
        from .checks import GraphCheckError
        from .parity import ParityError

        failed_check = isinstance(e, (GraphCheckError, ParityError))
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1 if failed_check else 2
    except RuntimeUnavailable as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    _report(result)
    if result.trt_error:
        print(f"{PROG}: error: --trt: {result.trt_error}; the ONNX above was written and checked, no engine was built",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)

"""`python -m bench.gpu_check` (`make gpu-check`): everything in avfast that needs an NVIDIA GPU, in one
run of at most ~10 minutes, written to bench/results/gpu-<gpu>.json and gpu-<gpu>.md.

Stages, each a subprocess with its own timeout, status (passed / failed / skipped, with the reason) and
the tail of its output; one failing or hanging stage does not stop the others:

  info                  torch / CUDA versions, the GPU, its compute capability, whether avfast's CUDA
                        extension is built and loads and whether Triton imports (`avfast.info`)
  tests-cuda            pytest: the CUDA-backend and GPU-marked tests (the emulated ones excluded)
  tests-triton          pytest: the Triton-backend tests, on the GPU (not the interpreter)
  sample:<runtime>      one clip from the default model through `python -m avfast.sample`'s code, a few
                        steps, per runtime (and eager-fused with AVFAST_BACKEND=cuda / =triton): it must
                        finish and be finite; a runtime that is not installed skips with the reason
                        (sample:compile runs after bench-runtimes-tiny, which warms inductor's cache)
  export-trt            `python -m avfast.export --trt` (skipped when tensorrt is not importable)
  bench-ops             attention, easy_fusion, contrastive_loss benchmarks (short time budget)
  bench-runtimes-tiny   ms/FE per runtime on a GPU (eager, bf16, torch.compile, ORT-CUDA, TensorRT
  bench-runtimes-paper-128                   fp32/fp16; the CPU-only ORT/OpenVINO rows are left out)

The stages run in that order against one deadline (--budget seconds, default 540): a stage's timeout is
its own or what is left, whichever is less; a stage that would start with too little left skips. A
stage that runs out of time gets SIGINT first (pytest then still writes its benchmark summary), then
SIGKILL. The results files are rewritten after every stage, so a run killed from outside still leaves
what it finished. `python -m bench.report` renders the GPU tables of docs/benchmarks.md from the results files
(bench.report.render_gpu; the .md written here is the same text).

This script installs and builds nothing: build the extension first (`make ext`, or
`pip install -e . --no-build-isolation --no-deps`; the info stage fails when the CUDA kernels are not
built). On a machine whose torch is preinstalled, run `python -m bench.gpu_check` from the repo root.

Without a CUDA GPU it prints one line and exits with status 77 (the automake/meson "skipped" code)
before importing torch where it can (no /dev/nvidia* device), writing nothing.

Exit status: 0 every stage passed or skipped; 1 a stage failed or timed out; 2 bad arguments;
77 no CUDA GPU here (nothing ran, nothing written).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NO_GPU_EXIT = 77
SCHEMA = "avfast-gpu-check/1"
DEFAULT_BUDGET_S = 540
MIN_STAGE_S = 15          # a stage with less time left than this skips
TAIL_CHARS = 4000         # output kept per stage in the JSON
KILL_GRACE_S = 20         # SIGINT, then this long for pytest to write its summary, then SIGKILL
SAMPLE_STEPS = 4
RESULT_TAG = "GPU_CHECK_RESULT "

# The runtimes a clip is sampled with: (label, --runtime, AVFAST_BACKEND, timeout s).
SAMPLES = [
    ("torch", "torch", None, 60),
    ("eager-reference", "eager-reference", None, 60),
    ("eager-fused", "eager-fused", None, 60),
    ("eager-fused+cuda", "eager-fused", "cuda", 60),
    ("eager-fused+triton", "eager-fused", "triton", 90),
    ("compile", "compile", None, 150),
    ("onnxruntime", "onnxruntime", None, 90),
    ("onnxruntime-cuda", "onnxruntime-cuda", None, 90),
    ("tensorrt", "tensorrt", None, 150),
    ("openvino", "openvino", None, 90),
]
# Runtime -> the module it needs (checked without importing it, so a missing one skips at once).
NEEDS = {"onnxruntime": ("onnxruntime", "onnx"), "onnxruntime-cuda": ("onnxruntime", "onnx"),
         "tensorrt": ("tensorrt", "onnx"), "openvino": ("openvino", "onnx")}
BENCH_OPS = ["bench/bench_attention.py", "bench/bench_easy_fusion.py", "bench/bench_contrastive_loss.py"]
# GPU rows only: the CPU-provider ORT and OpenVINO rows time the CPU (and export for minutes).
RUNTIME_ROWS = "not onnxruntime-fp and not openvino"
BENCH_OPTS = ["--benchmark-only", "--benchmark-max-time=0.05", "--benchmark-min-rounds=5",
              "--benchmark-warmup=off", "-q", "-p", "no:cacheprovider"]


# ------------------------------------------------------------------ no GPU: one line, before torch
def _no_gpu_device() -> str | None:
    """Why no NVIDIA GPU can be visible here, from the device nodes alone (no torch import), else None."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg") or glob.glob("/proc/driver/nvidia/gpus/*"):
        return None
    return "no NVIDIA device (/dev/nvidia*)"


def _no_gpu_line(reason: str) -> str:
    return f"gpu-check: no CUDA GPU here ({reason}); nothing ran, nothing written (exit {NO_GPU_EXIT})"


# ------------------------------------------------------------------ running one stage
def _tail(text: str, chars: int = TAIL_CHARS) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run `cmd` in its own process group with output to a file; on timeout SIGINT, then SIGKILL."""
    # TRITON_INTERPRET=1 left in the caller's environment would run the Triton kernels on the CPU.
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRITON_INTERPRET": None, **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    with tempfile.TemporaryFile(mode="w+b") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, grace in ((signal.SIGINT, KILL_GRACE_S), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    rc = proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    rc = None
        seconds = time.perf_counter() - t0
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    return {"rc": rc, "timed_out": timed_out, "seconds": round(seconds, 1), "output": output,
            "command": " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)}


def _stage(name: str, status: str, reason: str, run: dict | None = None, timeout: float | None = None,
           **details) -> dict:
    out = {"name": name, "status": status, "reason": reason, "seconds": run["seconds"] if run else 0.0,
           "timeout_s": round(timeout) if timeout else None, "command": run["command"] if run else None,
           "rc": run["rc"] if run else None, "tail": _tail(run["output"]) if run else ""}
    out.update(details)
    return out


_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def _pytest_counts(output: str) -> dict:
    lines = [ln for ln in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)", ln)]
    counts: dict[str, int] = {}
    for n, kind in _COUNTS.findall(lines[-1] if lines else ""):
        counts["error" if kind.startswith("error") else kind] = int(n)
    return counts


def _skip_reasons(output: str, limit: int = 3) -> list[str]:
    reasons = [m.group(1).strip() for m in re.finditer(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", output, flags=re.M)]
    return list(dict.fromkeys(reasons))[:limit]


def _pytest_stage(name: str, run: dict, timeout: float, bench_json: Path | None = None) -> dict:
    counts = _pytest_counts(run["output"])
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no pytest summary"
    details: dict = {"counts": counts}
    if bench_json is not None and bench_json.exists():
        details["bench"] = json.loads(bench_json.read_text())
    if run["timed_out"]:
        return _stage(name, "failed", f"timed out after {timeout:.0f} s ({summary})", run, timeout, **details)
    if run["rc"] == 5 or (run["rc"] == 0 and not counts.get("passed") and not counts.get("skipped")):
        return _stage(name, "skipped", "no test selected", run, timeout, **details)
    if run["rc"] != 0 or counts.get("failed") or counts.get("error"):
        return _stage(name, "failed", f"pytest exit {run['rc']}: {summary}", run, timeout, **details)
    if not counts.get("passed"):
        why = "; ".join(_skip_reasons(run["output"])) or "every test skipped"
        return _stage(name, "skipped", f"{summary}: {why}", run, timeout, **details)
    return _stage(name, "passed", summary, run, timeout, **details)


# ------------------------------------------------------------------ the stages
def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _pytest_plugins(per_test_timeout: int, workers: int = 0) -> list[str]:
    args = []
    if importlib.util.find_spec("pytest_timeout") is not None:
        args += [f"--timeout={per_test_timeout}"]
    if workers and importlib.util.find_spec("xdist") is not None:
        args += ["-n", str(workers)]
    return args


# Test files that mention CUDA but test no GPU code: the CUDA emulation, the AOT compile, the CMake build
# switches (test_framework), the benchmark harness and this script's own CPU tests all run on CPU in CI.
NOT_GPU_TESTS = ("test_aot_compile.py", "test_framework.py", "test_bench_harness.py", "test_gpu_check.py")


def _test_files() -> list[str]:
    """Test files that mention a GPU backend or the gpu mark."""
    out = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if "emulated" in path.name or path.name in NOT_GPU_TESTS:
            continue
        if re.search(r"cuda|triton|mark\.gpu", path.read_text()):
            out.append(str(path.relative_to(ROOT)))
    return out


def stage_info(timeout: float, ctx: dict) -> dict:
    code = ("import json, torch, importlib.util\n"
            "from avfast import info\n"
            "i = info.collect()\n"
            "p = torch.cuda.get_device_properties(0)\n"
            "i['torch'] = torch.__version__; i['torch_cuda'] = torch.version.cuda\n"
            "i['cudnn'] = torch.backends.cudnn.version()\n"
            "i['gpu'] = {'name': p.name, 'capability': f'{p.major}.{p.minor}',"
            " 'memory_gib': round(p.total_memory / 2**30, 1), 'multiprocessors': p.multi_processor_count}\n"
            "try:\n"
            "    import triton; i['triton_version'] = triton.__version__; i['triton_importable'] = True\n"
            "except Exception as e:\n"
            "    i['triton_importable'] = False; i['triton_error'] = f'{type(e).__name__}: {e}'\n"
            f"print({RESULT_TAG!r} + json.dumps(i, default=str))\n")
    run = _run(_py("-c", code), timeout)
    result = _result_line(run["output"])
    if result is None:
        why = "timed out" if run["timed_out"] else f"exit {run['rc']}"
        return _stage("info", "failed", f"could not collect the build info ({why})", run, timeout)
    ctx["info"] = result
    problems = []
    if not result["extensions"].get("cuda"):
        problems.append(f"avfast's CUDA extension is not loaded ({result['extension_errors'].get('cuda')}); build "
                        "it first: make ext, or pip install -e . --no-build-isolation --no-deps")
    if not result.get("triton_importable"):
        problems.append(f"Triton does not import ({result.get('triton_error')})")
    summary = (f"{result['gpu']['name']} (sm_{result['gpu']['capability'].replace('.', '')}), torch {result['torch']}, "
               f"CUDA {result['torch_cuda']}, avfast CUDA kernels "
               f"{'sm_' + str(result.get('cuda_archs')) if result['extensions'].get('cuda') else 'missing'}, Triton "
               f"{result.get('triton_version', 'missing')}, backends {', '.join(result['backends'])}")
    return _stage("info", "failed" if problems else "passed", "; ".join(problems) or summary, run, timeout,
                  summary=summary)


def stage_tests(name: str, expr: str):
    def stage(timeout: float, ctx: dict) -> dict:
        cmd = _py("-m", "pytest", *_test_files(), "-k", expr, "-q", "-rfEs", "-p", "no:cacheprovider",
                  *_pytest_plugins(per_test_timeout=120, workers=8))
        return _pytest_stage(name, _run(cmd, timeout), timeout)
    return stage


def _result_line(output: str) -> dict | None:
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    return None


def stage_sample(label: str, runtime: str, backend: str | None):
    def stage(timeout: float, ctx: dict) -> dict:
        name = f"sample:{label}"
        missing = [m for m in NEEDS.get(runtime, ()) if importlib.util.find_spec(m) is None]
        if missing:
            return _stage(name, "skipped", f"{missing[0]} is not installed")
        cmd = _py("-m", "bench.gpu_check", "--sample-child", runtime, "--out", str(ctx["tmp"] / f"sample-{label}"))
        run = _run(cmd, timeout, env={"AVFAST_BACKEND": backend} if backend else {"AVFAST_BACKEND": None})
        result = _result_line(run["output"])
        if run["timed_out"]:
            return _stage(name, "failed", f"timed out after {timeout:.0f} s", run, timeout)
        if result is None:
            return _stage(name, "failed", f"exit {run['rc']} without a result", run, timeout)
        status = result.pop("status")
        return _stage(name, status, result.pop("reason"), run, timeout, **result)
    return stage


def stage_export_trt(timeout: float, ctx: dict) -> dict:
    for module in ("tensorrt", "onnx"):
        if importlib.util.find_spec(module) is None:
            return _stage("export-trt", "skipped", f"{module} is not installed (pip install \"avfast[tensorrt,onnx]\")")
    run = _run(_py("-m", "avfast.export", "--trt", "--out", str(ctx["tmp"] / "export"), "--bench-steps", "5",
                   "--no-progress"), timeout)
    if run["timed_out"]:
        return _stage("export-trt", "failed", f"timed out after {timeout:.0f} s", run, timeout)
    if run["rc"] != 0:
        last = run["output"].strip().splitlines()[-1:] or [""]
        return _stage("export-trt", "failed", f"exit {run['rc']}: {last[0][:300]}", run, timeout)
    return _stage("export-trt", "passed", "ONNX exported and checked, TensorRT engine built and timed", run, timeout)


def stage_bench(name: str, files: list[str], expr: str | None = None):
    def stage(timeout: float, ctx: dict) -> dict:
        prefix = ctx["tmp"] / name
        cmd = _py("-m", "pytest", *files, *BENCH_OPTS, *(["-k", expr] if expr else []),
                  *_pytest_plugins(per_test_timeout=180))
        run = _run(cmd, timeout, env={"AVFAST_BENCH_SUMMARY": str(prefix), "AVFAST_BACKEND": None})
        result = _pytest_stage(name, run, timeout, bench_json=Path(str(prefix) + ".json"))
        rows = len(result.get("bench", {}).get("rows", []))
        result["reason"] += f"; {rows} timed rows"
        if result["status"] == "passed" and not rows:
            result["status"], result["reason"] = "failed", result["reason"] + " (no results JSON written)"
        return result
    return stage


def stages() -> list[tuple[str, float, object]]:
    """(name, default timeout s, function) in the order they run."""
    out = [("info", 90, stage_info),
           ("tests-cuda", 120, stage_tests("tests-cuda", "(cuda or gpu or xformers) and not emulated and not triton")),
           ("tests-triton", 150, stage_tests("tests-triton", "triton and not emulated"))]
    samples = {label: (f"sample:{label}", t, stage_sample(label, runtime, backend))
               for label, runtime, backend, t in SAMPLES}
    out += [stage for label, stage in samples.items() if label != "compile"]
    out += [("export-trt", 180, stage_export_trt),
            ("bench-ops", 180, stage_bench("bench-ops", BENCH_OPS)),
            ("bench-runtimes-tiny", 150, stage_bench("bench-runtimes-tiny", ["bench/bench_runtimes.py"],
                                                     f"tiny and {RUNTIME_ROWS}")),
            samples["compile"],  # after the tiny benchmark, whose torch.compile fills inductor's cache
            ("bench-runtimes-paper-128", 180, stage_bench("bench-runtimes-paper-128", ["bench/bench_runtimes.py"],
                                                          f"paper-128 and {RUNTIME_ROWS}"))]
    return out


# ------------------------------------------------------------------ one clip, in the child process
def sample_child(runtime: str, out: str, steps: int, device: str = "cuda") -> int:
    """Sample one joint clip of the default model through `avfast.Pipeline` on `runtime` and print a result
    line: finished, finite. The mp4 is written where the media extra is installed (a GPU box may lack `av`)."""
    import torch

    from avfast import runtime as R
    from avfast._deps import MissingDependency
    from avfast.pipeline import Pipeline

    if runtime in ("onnxruntime", "openvino"):  # CPU runtimes: the clip (and the sampler's state) on the CPU
        device = "cpu"
    try:
        pipe = Pipeline.from_pretrained("default", device=device, runtime=runtime, progress=False)
        clip = pipe(task="joint", steps=steps, seed=0)
    except ValueError as e:  # the pipeline's one-line refusal of a runtime that cannot run here
        if "cannot run here" not in str(e):
            raise
        print(RESULT_TAG + json.dumps({"status": "skipped", "reason": str(e)[:500]}))
        return 0
    except (R.RuntimeUnavailable, MissingDependency) as e:
        print(RESULT_TAG + json.dumps({"status": "skipped", "reason": str(e)[:500]}))
        return 0
    captured = {"video": clip.pixels, "audio": clip.waveform}
    note = ""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        clip.save(Path(out) / f"joint-{runtime}.mp4")
    except (ImportError, MissingDependency) as e:  # writing the clip needs the media extra (av)
        note = f"; the mp4 was not written: {str(e)[:200]}"
    finite = {k: bool(torch.isfinite(t).all()) for k, t in captured.items()}
    shapes = {k: list(t.shape) for k, t in captured.items()}
    ok = all(finite.values())
    reason = (f"{steps} steps on {device}, video {shapes['video']} audio {shapes['audio']} "
              f"{'finite' if ok else 'NOT finite: ' + str(finite)}{note}")
    print(RESULT_TAG + json.dumps({"status": "passed" if ok else "failed", "reason": reason, "finite": finite,
                                   "shapes": shapes}))
    return 0


# ------------------------------------------------------------------ results
def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def _merged_bench(results: list[dict]) -> dict | None:
    docs = [(s["name"], s["bench"]) for s in results if s.get("bench")]
    if not docs:
        return None
    merged = dict(docs[0][1])
    merged["rows"] = [row for _, doc in docs for row in doc.get("rows", [])]
    merged["warnings"] = [w for _, doc in docs for w in doc.get("warnings", [])]
    merged["command"] = "python -m bench.gpu_check (" + "; ".join(f"{n}: {doc.get('command')}" for n, doc in docs) + ")"
    return merged


def document(ctx: dict, results: list[dict], started: float, finished: bool) -> dict:
    failed = [s["name"] for s in results if s["status"] == "failed"]
    return {"schema": SCHEMA, "created": ctx["created"], "command": ctx["command"], "commit": ctx["commit"],
            "gpu": ctx["gpu"], "budget_s": ctx["budget"], "wall_s": round(time.perf_counter() - started, 1),
            "finished": finished, "failed": failed, "build": ctx.get("info"),
            "stages": [{k: v for k, v in s.items() if k != "bench"} for s in results],
            "bench": _merged_bench(results)}


def _write(doc: dict, out: Path) -> tuple[Path, Path]:
    from bench.report import render_gpu  # light: no torch

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu-{slug(doc['gpu']['name'])}"
    paths = (stem.with_suffix(".json"), stem.with_suffix(".md"))
    for path, text in zip(paths, (json.dumps(doc, indent=1, default=str) + "\n", render_gpu(doc) + "\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Exit status: 0 passed or skipped; 1 a stage failed; 2 bad arguments; "
                                            f"{NO_GPU_EXIT} no CUDA GPU here (nothing ran, nothing written).")
    parser.add_argument("--out", default=str(RESULTS), help="folder for gpu-<name>.json/.md (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for all stages together (default: %(default)s)")
    parser.add_argument("--stages", help="comma-separated stage names or prefixes to run (default: all; "
                                         "e.g. info,tests,sample:torch); the others are recorded as skipped")
    parser.add_argument("--list", action="store_true", help="print the stages and exit")
    parser.add_argument("--sample-child", metavar="RUNTIME", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=SAMPLE_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # the child's; cpu to try it without a GPU
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{name:<28} timeout {t:>4} s" for name, t, _ in stages()))
        return 0
    if args.sample_child:
        return sample_child(args.sample_child, args.out, args.steps, args.device)
    if args.budget <= 0:
        parser.error("--budget must be > 0")

    reason = _no_gpu_device()
    if reason is not None:
        print(_no_gpu_line(reason))
        return NO_GPU_EXIT
    import torch

    if not torch.cuda.is_available():
        print(_no_gpu_line(f"torch {torch.__version__} sees none"
                           + ("" if torch.version.cuda else ": a CPU-only build")))
        return NO_GPU_EXIT

    started = time.perf_counter()
    deadline = started + args.budget
    props = torch.cuda.get_device_properties(0)
    wanted = [s.strip() for s in args.stages.split(",")] if args.stages else None
    with tempfile.TemporaryDirectory(prefix="avfast-gpu-check-") as tmp:
        ctx = {"tmp": Path(tmp), "budget": args.budget, "commit": _git_commit(),
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["python -m bench.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
               "gpu": {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "count": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda}}
        out = Path(args.out)
        results: list[dict] = []
        print(f"gpu-check: {props.name} (sm_{props.major}{props.minor}), torch {torch.__version__}, budget "
              f"{args.budget:.0f} s; results to {out}/gpu-{slug(props.name)}.json", flush=True)
        for name, default_timeout, fn in stages():
            left = deadline - time.perf_counter()
            if wanted is not None and not any(name == w or name.startswith(w) for w in wanted):
                result = _stage(name, "skipped", "not selected (--stages)")
            elif left < MIN_STAGE_S:
                result = _stage(name, "skipped", f"out of the time budget ({max(left, 0):.0f} s of {args.budget:.0f} s "
                                                 "left)")
            else:
                timeout = min(default_timeout, left)
                try:
                    result = fn(timeout, ctx)
                except Exception as e:  # the check itself broke: record it, go on
                    result = _stage(name, "failed", f"gpu_check error: {type(e).__name__}: {e}")
            results.append(result)
            print(f"  {result['status']:<7} {name:<28} {result['seconds']:>6.1f} s  {result['reason'][:160]}",
                  flush=True)
            _write(document(ctx, results, started, finished=False), out)
        doc = document(ctx, results, started, finished=True)
        paths = _write(doc, out)
    failed = doc["failed"]
    print(f"gpu-check: {len(results) - len(failed)} of {len(results)} stages passed or skipped"
          f"{', failed: ' + ', '.join(failed) if failed else ''}; {doc['wall_s']:.0f} s; wrote "
          f"{', '.join(str(p) for p in paths)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

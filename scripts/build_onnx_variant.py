#!/usr/bin/env python
"""Build an onnxruntime-genai variant of a model with other builder options, for measurements.

The same steps as Enclave's ONNX recipe (``models/*.toml`` → genai builder →
optional GGUF transcode → chat template), with the builder's ``--extra_options``
and the transcode settings given on the command line, so that a lever (KV cache
precision, ``prune_lm_head``, accuracy level, lm_head/embedding quantisation) can
be built in one command and measured with ``scripts/probe_engine_memory.py``::

    python scripts/build_onnx_variant.py --hf HF_FP32_DIR --gguf MODEL.gguf --out OUT \\
        [--transcode split|none] [--kv-int8 per_channel|per_tensor] [KEY=VALUE …]

``HF_FP32_DIR`` is the dequantised transformers folder (``python -m
assistant.catalog.convert.hf MODEL.gguf HF_FP32_DIR``). ``--kv-int8`` first builds the
float-KV graph, calibrates the KV scales on it with the builder's own
``kv_cache_calibration`` tool, then rebuilds with ``kv_cache_quant_scheme`` and
``kv_cache_scale_file``. Each step runs in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ORT_DISABLE_TELEMETRY": "1",
}
REPO = Path(__file__).resolve().parent.parent
KEEP_LM_HEAD = (
    "import re, sys; import {module} as t; t._LM_HEAD_NODE = re.compile('(?!)'); sys.argv[0] = 'transcode'; t._main()"
)


def run(cmd: list[str], log: Path) -> None:
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        proc = subprocess.run(
            cmd, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **ENV}, cwd=REPO, check=False
        )
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd[:4])} …\n" + "\n".join(tail))
    print(f"  {cmd[2] if cmd[1] == '-m' else 'transcode'}: {time.monotonic() - started:.0f} s", file=sys.stderr)


def builder(hf: Path, out: Path, cache: Path, options: list[str], log: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out)]
    cmd += ["-p", "int4", "-e", "cpu", "-c", str(cache), "--extra_options", "hf_token=false", *options]
    run(cmd, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf", type=Path, required=True, help="dequantised fp32 transformers folder")
    parser.add_argument("--gguf", type=Path, help="the GGUF (needed for --transcode)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--transcode", default="split", choices=["split", "float_zp", "none"])
    parser.add_argument(
        "--transcode-module", default="assistant.catalog.convert.transcode", help="Enclave's transcoder"
    )
    parser.add_argument("--accuracy-level", type=int, default=None, help="transcode: every MatMulNBits")
    parser.add_argument("--lm-head-accuracy-level", type=int, default=None, help="transcode: the lm_head")
    parser.add_argument(
        "--keep-lm-head",
        action="store_true",
        help="transcode the body only: keep the builder's (re-quantised) lm_head and embedding",
    )
    parser.add_argument("--kv-int8", choices=["per_channel", "per_tensor"], default=None)
    parser.add_argument("options", nargs="*", help="builder extra_options, KEY=VALUE")
    args = parser.parse_args()

    out: Path = args.out.resolve()
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "build.log"
    cache = work / "cache"
    options = list(args.options)
    if args.kv_int8:
        base = work / "float-kv"
        builder(args.hf, base, cache, options, log)
        scales = work / "kv_scales.json"
        run(
            [
                sys.executable, "-m", "onnxruntime_genai.models.quantization.kv_cache_calibration",
                "--model", str(base), "--tokenizer", str(args.hf), "--out", str(scales),
                "--quant-type", f"int8_{args.kv_int8}",
            ],
            log,
        )  # fmt: skip
        options += [f"kv_cache_quant_scheme=int8_{args.kv_int8}", f"kv_cache_scale_file={scales}"]
    builder(args.hf, out, cache, options, log)
    if args.transcode != "none":
        if not args.gguf:
            parser.error("--transcode needs --gguf")
        cmd = [sys.executable, "-m", args.transcode_module, str(args.gguf), str(out), "--mode", args.transcode]
        if args.keep_lm_head:
            # The transcoder recognises the lm_head by this pattern: one that never
            # matches leaves the builder's lm_head and shared embedding as built.
            cmd[1:3] = ["-c", KEEP_LM_HEAD.format(module=args.transcode_module)]
        if args.accuracy_level is not None:
            cmd += ["--accuracy-level", str(args.accuracy_level)]
        if args.lm_head_accuracy_level is not None:
            cmd += ["--lm-head-accuracy-level", str(args.lm_head_accuracy_level)]
        run(cmd, log)
    template = args.hf / "chat_template.jinja"
    if template.is_file() and not (out / "chat_template.jinja").exists():
        shutil.copy2(template, out / "chat_template.jinja")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 2**20
    (out / "variant.json").write_text(
        json.dumps(
            {
                "options": options,
                "transcode": args.transcode,
                "keep_lm_head": args.keep_lm_head,
                "accuracy_level": args.accuracy_level,
            },
            indent=1,
        )
    )
    shutil.rmtree(work / "cache", ignore_errors=True)
    print(f"{out} ({size:.1f} MiB); log in {log}", file=sys.stderr)


if __name__ == "__main__":
    main()

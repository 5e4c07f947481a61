"""scripts/bench_peer.py sizes the KV cache by the engine's own rule (it cannot import it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from assistant.engines import onnx_genai

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_peer.py"


def test_the_peer_bench_sizes_the_cache_as_the_engine_does() -> None:
    spec = importlib.util.spec_from_file_location("bench_peer", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.KV_STEP == onnx_genai.KV_STEP
    assert bench.DRAFT_MARGIN == onnx_genai.MAX_DRAFT_TOKENS + 1
    assert (bench.NEXT_MESSAGE_ROOM, bench.IDLE_CHUNK) == (onnx_genai.NEXT_MESSAGE_ROOM, onnx_genai.IDLE_CHUNK)
    for capacity in (512, 2048, 4096):
        for current in (0, 256, 768, 1536):
            for need in (1, 200, 256, 257, 700, 1069, 2047, 5000):
                for floor in (0, 513):
                    assert bench.kv_allocation(need, current, capacity, floor) == onnx_genai.kv_allocation(
                        need, current, capacity, floor
                    )

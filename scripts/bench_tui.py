#!/usr/bin/env python
"""How much does the terminal UI slow decoding down?

Runs the same greedy answer through the core alone (``Conversation.ask``) and
through the real Textual app (headless, ``App.run_test``), alternating, and
compares decode tok/s and TTFT. The UI writes every token into a streaming
Markdown widget, so this is the cost of rendering while the model decodes.

    python scripts/bench_tui.py [--model NAME] [--runs 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import replace

from assistant.app.turns import Assistant
from assistant.core.settings import Settings
from assistant.privacy.guard import install_network_guard
from tui.app import EnclaveApp

PROMPT = "Explain step by step how to service a centrifugal pump, with safety checks."


def core_run(settings: Settings) -> tuple[float, float]:
    assistant = Assistant(settings)
    conv = assistant.conversation(save=False)
    result = conv.ask(PROMPT)
    assistant.close()
    assert result.usage is not None
    return result.usage.decode_tokens_per_s, result.usage.ttft_ms


async def tui_run(settings: Settings) -> tuple[float, float]:
    app = EnclaveApp(settings)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.conv is None:
            await pilot.pause(0.05)
        app.query_one("#prompt").value = PROMPT
        await pilot.press("enter")
        await pilot.pause(0.1)
        while app._busy:
            await pilot.pause(0.05)
        usage = app.last_result.usage
    return usage.decode_tokens_per_s, usage.ttft_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    args = parser.parse_args()
    install_network_guard()
    settings = Settings.load(model=args.model, threads=args.threads)
    settings = replace(settings, max_tokens=args.tokens, temperature=0.0)
    core, ui = [], []
    for _ in range(args.runs):
        core.append(core_run(settings))
        ui.append(asyncio.run(tui_run(settings)))
    c_tps = statistics.median(r[0] for r in core)
    u_tps = statistics.median(r[0] for r in ui)
    c_ttft = statistics.median(r[1] for r in core)
    u_ttft = statistics.median(r[1] for r in ui)
    print(
        f"model {settings.model}, threads {settings.threads or 'auto'}, {args.runs} runs each, {args.tokens} tokens max, medians"
    )
    print(f"{'':10} {'decode tok/s':>12} {'TTFT ms':>8}")
    print(f"{'core':10} {c_tps:12.1f} {c_ttft:8.0f}")
    print(f"{'TUI':10} {u_tps:12.1f} {u_ttft:8.0f}")
    print(f"TUI decode overhead: {100 * (c_tps - u_tps) / c_tps:+.1f} %")


if __name__ == "__main__":
    main()

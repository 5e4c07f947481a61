#!/usr/bin/env python
"""What can Enclave's token-level engine seam get out of LiteRT-LM (litert-lm-api 0.18.1)?

Runs the runtime on a ``.litertlm`` bundle and prints, for each question, what
it did and what it answered (exact error texts included):

* engine creation (``Backend.CPU(thread_count=…)``, ``max_num_tokens``, an
  existing ``cache_dir``), the Conversation API (streaming, benchmark info,
  token count, multi-turn reuse of the KV cache);
* the Session API against the seam: (a) tokenizer access, (b) prefilling
  explicit token ids, (c) one-token decode steps, (d) counting held tokens,
  (e) rewind / clone / reset, (f) cancel, (g) context overflow, (h) KV cache to
  disk.

Some operations exist in ``liblitert-lm.so`` but are not wrapped by the Python
package (rewind, checkpoints, conversation clone, last error): they are called
here through ``ctypes`` on the wrapper's native pointers (``_ptr``).

    .venv/bin/python scripts/probe_litert.py [tests/assets/tiny-gemma.litertlm]

Takes a few seconds on the tiny bundle. Native log lines go to stderr; silence
them with ``2>/dev/null``.
"""

from __future__ import annotations

import ctypes
import json
import re
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import litert_lm as lm
from litert_lm._ffi import _get_lib

BUNDLE = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/assets/tiny-gemma.litertlm")
MULTIBYTE = "café 😀 日本語"


# --------------------------------------------------------------------------- native extras
class Native:
    """C entry points of liblitert-lm.so that litert_lm 0.18.1 does not wrap."""

    def __init__(self) -> None:
        lib = _get_lib()
        c = ctypes
        lib.litert_lm_get_last_error_message.restype = c.c_char_p
        lib.litert_lm_get_last_error_code.restype = c.c_int
        for name in ("litert_lm_session_save_checkpoint", "litert_lm_session_rewind_to_checkpoint"):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = [c.c_void_p, c.c_char_p], c.c_int
        lib.litert_lm_session_rewind_to_step.argtypes = [c.c_void_p, c.c_int]
        lib.litert_lm_session_rewind_to_step.restype = c.c_int
        lib.litert_lm_conversation_clone.argtypes = [c.c_void_p]
        lib.litert_lm_conversation_clone.restype = c.c_void_p
        self.lib = lib

    def last_error(self) -> str:
        msg = self.lib.litert_lm_get_last_error_message()
        return f"[code {self.lib.litert_lm_get_last_error_code()}] {msg.decode() if msg else ''}"

    def rewind_to_step(self, session: lm.Session, step: int) -> int:
        return int(self.lib.litert_lm_session_rewind_to_step(session._ptr, step))

    def save_checkpoint(self, session: lm.Session, label: str) -> int:
        return int(self.lib.litert_lm_session_save_checkpoint(session._ptr, label.encode()))

    def rewind_to_checkpoint(self, session: lm.Session, label: str) -> int:
        return int(self.lib.litert_lm_session_rewind_to_checkpoint(session._ptr, label.encode()))

    def clone_conversation(self, conv: lm.Conversation) -> lm.Conversation:
        ptr = self.lib.litert_lm_conversation_clone(conv._ptr)
        if not ptr:
            raise RuntimeError(f"litert_lm_conversation_clone failed: {self.last_error()}")
        return lm.Conversation(self.lib, ptr, engine=conv._engine)


NATIVE = Native()


def current_step(session: lm.Session) -> int | str:
    """Tokens the session's KV cache holds. GetCurrentStep is not exported, but
    rewinding past the end fails with "... greater than the current step: N"."""
    NATIVE.rewind_to_step(session, 1 << 30)
    match = re.search(r"current step: (\d+)", NATIVE.last_error())
    return int(match.group(1)) if match else NATIVE.last_error()


def timed(fn: Any, timeout: float = 5.0) -> Any:
    """``fn()`` in a daemon thread: some calls never return after a cancel."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception as exc:  # noqa: BLE001
            box.append(f"RAISED {type(exc).__name__}: {exc} | native: {NATIVE.last_error()}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box else f"HUNG: no answer in {timeout:.0f} s"


def attempt(label: str, fn: Any) -> Any:
    """Run ``fn``; print its result or its Python error plus the native last error."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure
        print(f"  {label}: RAISED {type(exc).__name__}: {exc} | native: {NATIVE.last_error()}")
        return exc
    print(f"  {label}: {result!r}")
    return result


def heading(text: str) -> None:
    print(f"\n== {text}")


# --------------------------------------------------------------------------- bundle tokenizer
def bundle_tokenizer_json(path: Path) -> dict[str, Any] | None:
    """The HF tokenizer.json stored in a .litertlm bundle, found without its schema.

    Sections start on 16 KiB boundaries; an ``HF_Tokenizer_Zlib`` section is an
    8-byte little-endian uncompressed size followed by a zlib stream. (Production
    code should read the section table with the flatbuffer schema that ships in
    litert-lm-builder; this is enough to show the tokenizer is reachable.)
    """
    data = path.read_bytes()
    for offset in range(16384, len(data), 16384):
        size = struct.unpack_from("<Q", data, offset)[0]
        if data[offset + 8 : offset + 9] != b"\x78" or not 0 < size < 64 << 20:
            continue
        try:
            text = zlib.decompressobj().decompress(data[offset + 8 :], size)
            return json.loads(text)  # type: ignore[no-any-return]
        except (zlib.error, ValueError):
            continue
    return None


# --------------------------------------------------------------------------- probes
def probe_conversation(engine: lm.Engine, template_prompt: list[int]) -> None:
    heading("Conversation API")
    conv = engine.create_conversation(
        system_message="You are terse.",
        sampler_config=lm.SamplerConfig(top_k=1, seed=1),
        max_output_tokens=8,
    )
    rendered = conv.render_message_to_string({"role": "user", "content": "hello world"})
    print(f"  render_message_to_string(user 'hello world'): {rendered!r}")
    chunks: list[str] = []
    start = time.perf_counter()
    for message in conv.send_message_async("hello world"):
        chunks.extend(part["text"] for part in message["content"] if part.get("type") == "text")
    print(f"  send_message_async chunks ({(time.perf_counter() - start) * 1000:.0f} ms): {chunks!r}")
    print(
        f"  token_count after turn 1: {conv.token_count} (our template render of the prompt: {len(template_prompt)} tokens + 8 answer)"
    )
    print(f"  get_benchmark_info(): {conv.get_benchmark_info()}")
    for _message in conv.send_message_async("and again"):
        pass
    print(f"  turn 2 benchmark: {conv.get_benchmark_info()} token_count {conv.token_count}")
    clone = attempt("litert_lm_conversation_clone (unwrapped)", lambda: NATIVE.clone_conversation(conv))
    if isinstance(clone, lm.Conversation):
        a = "".join(p["text"] for m in conv.send_message_async("third") for p in m["content"])
        b = "".join(p["text"] for m in clone.send_message_async("third") for p in m["content"])
        print(f"  original vs clone answer to the same turn: {a!r} vs {b!r} (equal: {a == b})")
        clone.close()
    conv.close()


def probe_tokenizer(engine: lm.Engine) -> Any:
    heading("(a) tokenizer")
    ids = engine.tokenize(MULTIBYTE)
    print(f"  engine.tokenize({MULTIBYTE!r}) -> {ids}")
    print(f"  engine.detokenize(all) -> {engine.detokenize(ids)!r}")
    print(f"  engine.detokenize(each) -> {[engine.detokenize([t]) for t in ids]!r}")
    print(f"  specials: tokenize('<start_of_turn>user\\n') -> {engine.tokenize('<start_of_turn>user' + chr(10))}")
    print(f"  engine.bos_token_id {engine.bos_token_id}, engine.eos_token_ids {engine.eos_token_ids}")
    print(f"  engine.tokenize('') -> {attempt_quiet(lambda: engine.tokenize(''))}")
    spec = bundle_tokenizer_json(BUNDLE)
    if spec is None:
        print("  bundle tokenizer.json: not found (SentencePiece bundle?)")
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(spec))
    samples = [MULTIBYTE, "hello world", "<start_of_turn>user\nhi<end_of_turn>\n", "Straße 1000 € ✅"]
    same = all(tok.encode(s, add_special_tokens=False).ids == engine.tokenize(s) for s in samples)
    print(
        f"  bundle tokenizer.json loaded with `tokenizers` (vocab {tok.get_vocab_size()}); encode == engine.tokenize on {len(samples)} samples: {same}"
    )
    return tok


def attempt_quiet(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return f"RAISED {type(exc).__name__}: {exc} | native: {NATIVE.last_error()}"


def greedy_session(engine: lm.Engine, max_output_tokens: int) -> lm.Session:
    return engine.create_session(
        apply_prompt_template=False,
        sampler_config=lm.SamplerConfig(top_k=1, seed=1),
        max_output_tokens=max_output_tokens,
    )


def probe_prefill_and_decode(engine: lm.Engine, prompt_text: str, prompt_ids: list[int]) -> str:
    heading("(b) prefill: text only")
    print("  Session.run_prefill(contents: list[str]) -> None; the C API's litert_lm_input_data_create takes")
    print("  TEXT/IMAGE/AUDIO bytes only: there is no way to hand over token ids from Python or C.")
    body = prompt_text.removeprefix("<bos>")
    s = greedy_session(engine, 8)
    s.run_prefill([body])
    n_body = len(engine.tokenize(body))
    print(
        f"  first prefill of {n_body} tokens (no <bos> in text): benchmark says {s.get_benchmark_info().last_prefill_token_count}"
        " -> the session prepends the start token on its first prefill"
    )
    s.close()
    s = greedy_session(engine, 8)
    s.run_prefill([prompt_text])
    print(
        f"  first prefill of text that starts with '<bos>' ({len(prompt_ids)} tokens): counted {s.get_benchmark_info().last_prefill_token_count}"
        " -> <bos> twice"
    )
    s.close()
    # Does text prefill of a token suffix reproduce the ids? Not in general (merges across the cut).
    word = "hello world"
    ids = engine.tokenize(word)
    for cut in range(1, len(ids)):
        head, tail = ids[:cut], ids[cut:]
        if engine.tokenize(engine.detokenize(tail)) != tail or engine.tokenize(engine.detokenize(head)) != head:
            print(
                f"  {word!r} = {ids}; split at {cut}: re-tokenizing the detokenized halves gives"
                f" {engine.tokenize(engine.detokenize(head))} + {engine.tokenize(engine.detokenize(tail))}"
            )
            break
    else:
        print(f"  {word!r} = {ids}: every split re-tokenizes to the same ids")
    partial = engine.tokenize(MULTIBYTE)
    broken = [t for t in partial if "\ufffd" in engine.detokenize([t])]
    print(f"  tokens holding part of a character detokenize to U+FFFD and cannot be sent as text: {broken}")

    heading("(c) decode one token at a time")
    one = greedy_session(engine, 12)
    one.run_prefill([body])
    reference = one.run_decode()
    print(f"  run_decode() with max_output_tokens=12: {reference}")
    print(f"  ... benchmark: {one.get_benchmark_info()}")
    one.close()
    s = greedy_session(engine, 1)
    s.run_prefill([body])
    print(f"  current step after prefilling {n_body} tokens: {current_step(s)}")
    first = s.run_decode()
    second = attempt_quiet(s.run_decode)  # before current_step(): its failed rewind marks the session prefilled
    print(
        f"  run_decode() with max_output_tokens=1: texts={first.texts} (no token ids in Responses: token_lengths={first.token_lengths});"
        f" step {current_step(s)} -> the sampled token is already counted in the cache"
    )
    print(f"  second run_decode() without a prefill: {second}")
    s.run_prefill([first.texts[0]])
    print(f"  prefill(text of that token): step {current_step(s)} -> it is now in the cache twice")
    s.close()
    s = greedy_session(engine, 1)
    s.run_prefill([body])
    pieces: list[str] = []
    for _ in range(12):
        piece = s.run_decode().texts[0]
        pieces.append(piece)
        if "\ufffd" in piece:
            break  # part of a character: its text cannot be fed back
        NATIVE.rewind_to_step(s, int(current_step(s)) - 1)
        s.run_prefill([piece])
    print(f"  loop decode(1); rewind_to_step(step-1); prefill(text of token): {pieces!r}")
    print(
        f"  matches the one-shot decode so far: {reference.texts[0].startswith(''.join(pieces))}"
        f"{' (stopped at a partial character)' if pieces and chr(0xFFFD) in pieces[-1] else ''}"
    )
    s.close()
    s = greedy_session(engine, 1)
    s.run_prefill([body])
    pieces = []
    for _ in range(12):
        pieces.append(s.run_decode().texts[0])
        NATIVE.rewind_to_step(s, int(current_step(s)))  # a no-op rewind re-arms decoding
    print(f"  loop decode(1); rewind_to_step(current step): {pieces!r}")
    print(f"  equal to the one-shot decode: {''.join(pieces) == reference.texts[0]}; step {current_step(s)}")
    s.close()
    stream = greedy_session(engine, 12)
    stream.run_prefill([body])
    chunks = [r.texts[0] for r in stream.run_decode_async()]
    print(f"  run_decode_async() chunks: {chunks!r}")
    stream.close()
    return str(reference.texts[0])


def probe_rewind(engine: lm.Engine, body: str, reference: str) -> None:
    heading("(d) token count")
    print(
        "  Session has no token count (C API: only litert_lm_conversation_get_token_count, wrapped as Conversation.token_count);"
    )
    print(
        "  GetCurrentStep exists in C++ but is not exported. Per call: get_benchmark_info().last_prefill_token_count /"
    )
    print("  last_decode_token_count (needs enable_benchmark=True).")

    heading("(e) rewind / checkpoints / clone / reset")
    n = len(engine.tokenize(body)) + 1  # + the <bos> the session adds
    s = greedy_session(engine, 12)
    s.run_prefill([body])
    print(f"  save_checkpoint('prompt') -> {NATIVE.save_checkpoint(s, 'prompt')}")
    first = s.run_decode().texts[0]
    print(f"  rewind_to_checkpoint('prompt') -> {NATIVE.rewind_to_checkpoint(s, 'prompt')}")
    again = attempt_quiet(lambda: s.run_decode().texts[0])
    print(f"  decode, rewind to checkpoint, decode: {first!r} / {again!r} (equal {first == again})")
    rc = NATIVE.rewind_to_checkpoint(s, "missing")
    print(f"  rewind_to_checkpoint('missing') -> {rc}: {NATIVE.last_error()}")
    s.run_prefill([" plus some other words"])
    print(
        f"  prefilled more; rewind_to_step({n}) -> {NATIVE.rewind_to_step(s, n)}; decode directly:"
        f" {attempt_quiet(lambda: s.run_decode().texts[0])!r}"
    )
    s.run_prefill([" plus some other words"])
    last = engine.detokenize(engine.tokenize(body)[-1:])
    print(
        f"  rewind_to_step({n - 1}) -> {NATIVE.rewind_to_step(s, n - 1)}; prefill last token {last!r}; decode:"
        f" {attempt_quiet(lambda: (s.run_prefill([last]), s.run_decode().texts[0])[1])!r}"
    )
    print(f"  reference (fresh session): {reference!r}")
    print(f"  rewind_to_step(10_000) -> {NATIVE.rewind_to_step(s, 10_000)}: {NATIVE.last_error()}")
    print(
        f"  rewind_to_step(0) (reset) -> {NATIVE.rewind_to_step(s, 0)}; prefill body; decode:"
        f" {attempt_quiet(lambda: (s.run_prefill([body]), s.get_benchmark_info().last_prefill_token_count, s.run_decode().texts[0])[1:])!r}"
    )
    other = attempt("second live session on the same engine", lambda: greedy_session(engine, 4))
    if isinstance(other, lm.Session):
        other.run_prefill([body])
        print(f"  second session decodes independently: {other.run_decode().texts[0]!r}")
        other.close()
    print("  Session clone: not in the C API (SessionAdvanced::Clone is C++ only); conversation clone is (see above).")
    s.close()


def probe_cancel(engine: lm.Engine, body: str) -> None:
    heading("(f) cancel")
    s = greedy_session(engine, 100)
    s.run_prefill([body])
    chunks: list[str] = []

    def consume() -> int:
        for r in s.run_decode_async():
            chunks.append(r.texts[0])
            if len(chunks) == 5:
                s.cancel_process()  # from the consuming thread; any thread works
        return len(chunks)

    print(f"  cancel_process() after 5 chunks of run_decode_async: stream ended after {timed(consume)} chunks")
    print(
        f"  prefill + run_decode after cancel: {timed(lambda: (s.run_prefill([' next']), s.run_decode().texts[0])[1])!r}"
    )
    print(
        f"  prefill + run_decode_async after cancel: {timed(lambda: (s.run_prefill([' next']), [r.texts[0] for r in s.run_decode_async()])[1])!r}"
    )
    s.close()
    s = greedy_session(engine, 8)
    s.run_prefill([body])
    chunks.clear()
    timed(consume)
    step = current_step(s)
    print(
        f"  new session, cancelled the same way at step {step}; rewind_to_step({step}) -> {NATIVE.rewind_to_step(s, int(step))}"
        " (clears the failed task chain)"
    )
    print(
        f"  prefill + run_decode after that rewind: {timed(lambda: (s.run_prefill([' next']), s.run_decode().texts[0])[1])!r}"
    )
    s.close()


def probe_overflow(engine: lm.Engine, body: str, limit: int) -> None:
    heading(f"(g) context overflow (max_num_tokens={limit})")
    s = greedy_session(engine, 4)
    long_text = " ".join(["hello world"] * limit)
    print(f"  prefill {len(engine.tokenize(long_text))} tokens: {attempt_quiet(lambda: s.run_prefill([long_text]))}")
    print(
        f"  then prefill + decode a short prompt: {timed(lambda: (s.run_prefill([body]), s.run_decode().texts[0])[1])!r}"
    )
    print(
        f"  rewind_to_step(0) -> {NATIVE.rewind_to_step(s, 0)}; prefill + decode:"
        f" {timed(lambda: (s.run_prefill([body]), s.run_decode().texts[0])[1])!r}"
    )
    s.close()
    s = greedy_session(engine, 4 * limit)
    s.run_prefill([body])
    out = timed(lambda: s.run_decode().texts[0])
    print(
        f"  decode past the window (max_output_tokens={4 * limit}): returned {len(out) if isinstance(out, str) else out} chars,"
        f" no error"
    )
    print(f"  ... benchmark: {attempt_quiet(s.get_benchmark_info)}")
    print(f"  then prefill more: {timed(lambda: s.run_prefill([' again']))}; step {current_step(s)}")
    print(
        f"  rewind_to_step(4) -> {NATIVE.rewind_to_step(s, 4)}; prefill + decode:"
        f" {timed(lambda: (s.run_prefill([' again']), s.run_decode().texts[0])[1])!r}"
    )
    s.close()
    conv = engine.create_conversation(max_output_tokens=4)
    print(f"  conversation overflow: {timed(lambda: [m for m in conv.send_message_async(long_text)])}")
    print(
        f"  conversation afterwards: {timed(lambda: [m for m in conv.send_message_async('hi')])}, token_count {conv.token_count}"
    )
    conv.close()


def probe_kv_to_disk() -> None:
    heading("(h) KV cache to disk")
    lib = NATIVE.lib
    names = [
        n
        for n in ("litert_lm_session_save_state", "litert_lm_session_serialize", "litert_lm_session_load_state")
        if hasattr(lib, n)
    ]
    print(
        f"  serialising entry points present: {names or 'none'}; checkpoints are in-memory step labels"
        " (SaveCheckpoint stores the current step), cache_dir holds compiled-model caches, not KV"
    )


def main() -> None:
    if not BUNDLE.is_file():
        sys.exit(f"{BUNDLE} not found: build it with scripts/build_tiny_litertlm.py")
    limit = 128
    with tempfile.TemporaryDirectory() as cache_dir:
        heading("engine")
        start = time.perf_counter()
        engine = lm.Engine(
            str(BUNDLE),
            backend=lm.Backend.CPU(thread_count=2),
            max_num_tokens=limit,
            cache_dir=cache_dir,  # must exist, else a model-sized cache lands next to the model
            enable_benchmark=True,
        )
        print(
            f"  Engine(Backend.CPU(thread_count=2), max_num_tokens={limit}, cache_dir=tmp): {(time.perf_counter() - start) * 1000:.0f} ms"
        )
        print(f"  cache_dir now holds: {sorted(p.name for p in Path(cache_dir).iterdir())}")
        tok = probe_tokenizer(engine)
        template = "<bos><start_of_turn>user\nYou are terse.\n\nhello world<end_of_turn>\n<start_of_turn>model\n"
        prompt_ids = engine.tokenize(template)
        probe_conversation(engine, prompt_ids)
        reference = probe_prefill_and_decode(engine, template, prompt_ids)
        body = template.removeprefix("<bos>")
        probe_rewind(engine, body, reference)
        probe_cancel(engine, body)
        probe_overflow(engine, body, limit)
        probe_kv_to_disk()
        del tok
        engine.close()


if __name__ == "__main__":
    main()

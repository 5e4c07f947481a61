"""One validated settings schema: every field, from the config file, the environment and the command line.

Every invalid value is refused with the setting's name, where it came from and what it
accepts — never silently turned into a default (``cloud_redact = "ture"`` used to turn
redaction off) or clamped.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from assistant.core.settings import RULES, InvalidSetting, Settings, parse_setting
from tests.cli.test_cli import enclave

CORES = len(os.sched_getaffinity(0))

#: name → (good values, bad values), as the environment or `config set` gives them (text).
TEXT_INPUTS: dict[str, tuple[list[str], list[str]]] = {
    "model": (["smollm2-135m-instruct", "my.model_2"], ["", "../x", "a b", "x" * 101, "a\x1b]0;t\x07"]),
    "engine": (["onnx", "litert"], ["ONNX", "llama.cpp", ""]),
    "context_window": (["64", "2048", "131072"], ["63", "0", "-1", "131073", "1e400", "2048.5", "lots", "", "inf"]),
    "max_tokens": (["1", "512", "32768"], ["0", "-5", "32769", "1.5", "many"]),
    "temperature": (["0", "0.7", "2"], ["-0.1", "2.01", "nan", "inf", "hot"]),
    "top_p": (["0.01", "1", "0.95"], ["0", "7", "-1", "1.0001", "nan"]),
    "top_k": (["1", "40", "1000"], ["0", "1001", "-3", "4.5"]),
    "seed": (["", "0", "42", str(2**31 - 1)], ["-1", str(2**31), "seed", "1.5"]),
    "threads": (["0", "1", str(2 * CORES)], ["-1", str(2 * CORES + 1), "1000", "all"]),
    "persona": (["general", "my persona"], ["../../etc/passwd", "a/b", "", "x" * 101]),
    "context_policy": (["stop", "drop-oldest", "truncate-middle"], ["drop", "STOP", ""]),
    "answer_reserve": (["0", "100"], ["-1", "32769", "half"]),
    "docs_passages": (["1", "5", "50"], ["0", "51", "-2"]),
    "docs_min_similarity": (["0", "0.44", "1", "-1"], ["1.5", "-2", "nan", "high"]),
    "docs_background_on_battery": (["true", "false"], ["maybe"]),
    "docs_rescore_top": (["0", "10", "50"], ["-1", "51", "ten"]),
    "docs_build_embedder": (["true", "false", "1", "0", "yes", "no", "on", "off", "TRUE"], ["ture", "2", "y", ""]),
    "docs_max_file_mb": (["1", "200", "10240"], ["0", "10241", "-1"]),
    "docs_parse_timeout": (["1", "60", "3600"], ["0", "0.5", "3601", "inf"]),
    "theme": (["textual-dark", "nord"], ["", "dark theme", "x" * 65]),
    "cloud_base_url": (["", "http://127.0.0.1:8000/v1", "https://llm.example.org/v1"],
                       ["ftp://x", "llm.example.org:8000", "http://", "http://host:99999/v1", "http://a b/v1"]),
    "cloud_model": (["", "gpt-4o-mini"], ["x" * 201, "a\nb"]),
    "cloud_timeout": (["1", "60", "600"], ["0", "601", "-1", "nan"]),
    "cloud_deadline": (["1", "300", "3600"], ["0", "3601", "inf"]),
    "cloud_retries": (["0", "3", "10"], ["-1", "11", "three"]),
    "cloud_redact": (["true", "false", "on", "off"], ["ture", "sure", "", "2"]),
    "cloud_redact_patterns": (['["ACME-\\\\d+"]', "[]", "one\ntwo"], ['["("]', "[1, 2]", '["ok", 3]', "[not json"]),
    "encrypt": (["true", "false"], ["maybe"]),
    "docs_answer_mode": (["auto", "extract", "quote", "free"], ["", "EXTRACT", "guess"]),
    "repeat_penalty": (["1", "1.2", "3"], ["0.9", "3.5", "nan", "high"]),
    "device": (["cpu", "gpu"], ["tpu", "GPU", ""]),
    "power": (["auto", "saver", "performance"], ["turbo", ""]),
    "speculation": (["auto", "on", "off"], ["always", "ON ", ""]),
    "kv_cache": (["auto", "grow", "window"], ["preallocate", "GROW", ""]),
    "budget_ttft_ms": (["1", "3000", "1e7"], ["0", "-1", "inf", "fast"]),
    "budget_decode_tokens_per_s": (["0", "10", "1e6"], ["-1", "nan", "fast"]),
    "bundle_max_mb": (["1", "16384"], ["0", "-1", "big"]),
    "drift_max_perplexity_rise": (["0", "0.1", "10"], ["-0.1", "11", "nan"]),
    "drift_min_agreement": (["0", "0.25", "1"], ["-0.1", "1.1"]),
    "serve_port": (["0", "8642", "65535"], ["-1", "65536", "http"]),
    "serve_queue": (["0", "4", "1024"], ["-1", "1025"]),
    "serve_kv_mib": (["0", "512"], ["-1", "lots"]),
    "serve_max_body_kib": (["1", "2048"], ["0", "-1"]),
    "serve_cors_origins": (['["http://localhost:3000"]', "[]"], ["[1]", "[not json"]),
    "serve_allowed_hosts": (['["enclave.internal"]', "[]"], ['["ok", 3]']),
    "serve_save_history": (["true", "false"], ["ture"]),
    "privacy_seal": (["warn", "require"], ["off", "WARN", ""]),
}  # fmt: skip

CASES = [(n, v, True) for n, (good, _) in TEXT_INPUTS.items() for v in good] + [
    (n, v, False) for n, (_, bad) in TEXT_INPUTS.items() for v in bad
]


def test_the_schema_covers_every_setting() -> None:
    assert sorted(f.name for f in fields(Settings) if f.name != "locations") == sorted(RULES) == sorted(TEXT_INPUTS)


@pytest.mark.parametrize(("name", "value", "valid"), CASES, ids=[f"{n}={v[:20]!r}" for n, v, _ in CASES])
def test_each_value_from_the_environment_is_checked(
    name: str, value: str, valid: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"ENCLAVE_{name.upper()}", value)
    if valid:
        Settings.load()
        return
    with pytest.raises(InvalidSetting) as caught:
        Settings.load()
    assert name in caught.value.message and f"ENCLAVE_{name.upper()}" in caught.value.message
    assert caught.value.hint.startswith(f"{name} takes ")


#: Values as TOML types them in config.toml.
TOML_BAD = [
    ("context_window", "1e400"),  # TOML reads this as infinity
    ("context_window", "2048.5"),
    ("context_window", "true"),
    ("context_window", '"2048x"'),
    ("temperature", "nan"),
    ("temperature", "[0.5]"),
    ("cloud_redact", '"ture"'),
    ("cloud_redact", "2"),
    ("encrypt", '"maybe"'),
    ("engine", "1"),
    ("cloud_redact_patterns", '"(["'),
    ("cloud_redact_patterns", "[1, 2]"),
    ("seed", "-1"),
    ("threads", "1000"),
    ("model", "{ name = 'x' }"),
]


@pytest.mark.parametrize(("name", "toml"), TOML_BAD)
def test_each_bad_value_in_the_config_file_is_refused_with_the_file_named(
    name: str, toml: str, enclave_home: Path
) -> None:
    path = enclave_home / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f"{name} = {toml}\n")
    with pytest.raises(InvalidSetting) as caught:
        Settings.load()
    assert name in caught.value.message and str(path) in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        "colour = 'red'",
        "[cloud]\nbase_url = 'x'",
        "context_window = ",
        "\xff = 1",
        "context_window = 1\ncontext_window = 2",
    ],
    ids=["unknown", "table", "no-value", "not-utf8", "twice"],
)
def test_a_broken_config_file_is_one_clear_error(text: str, enclave_home: Path) -> None:
    path = enclave_home / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(InvalidSetting) as caught:
        Settings.load()
    assert str(path) in caught.value.message


def test_the_answer_reserve_must_leave_room_for_a_prompt() -> None:
    with pytest.raises(InvalidSetting, match="leaves no room"):
        Settings.load(context_window=512, answer_reserve=512)
    assert Settings.load(context_window=512, answer_reserve=511).answer_reserve == 511


def test_booleans_are_strict_and_typed_values_pass_through() -> None:
    assert parse_setting("cloud_redact", True) is True and parse_setting("cloud_redact", "OFF") is False
    for sloppy in ("ture", "enabled", "", "yes please"):
        with pytest.raises(InvalidSetting, match="neither true nor false"):
            parse_setting("cloud_redact", sloppy)
    assert parse_setting("temperature", 1) == 1.0 and parse_setting("context_window", 4096.0) == 4096


# ----------------------------------------------------------------------- the command line
def test_config_set_refuses_nonsense_and_keeps_the_file(enclave_home: Path) -> None:
    enclave("config", "set", "cloud_redact", "false", home=enclave_home)
    config = enclave_home / "config" / "config.toml"
    before = config.read_text()
    for name, value in [("cloud_redact", "ture"), ("top_p", "7"), ("threads", "1000"), ("context_policy", "maybe")]:
        bad = enclave("config", "set", name, value, home=enclave_home, check=False)
        assert bad.returncode == 1 and "is not valid" in bad.stderr and f"{name} takes" in bad.stderr, bad.stderr
        assert "internal error" not in bad.stderr
    assert config.read_text() == before
    assert oct(config.stat().st_mode & 0o777) == "0o600"


def test_flags_are_checked_by_the_same_schema(enclave_home: Path) -> None:
    for flag, value in [("--threads", "1000"), ("--temperature", "5"), ("--max-tokens", "0"), ("--ctx", "10")]:
        proc = enclave("ask", flag, value, "hello", home=enclave_home, check=False)
        assert proc.returncode == 1 and "is not valid" in proc.stderr and "from the command line" in proc.stderr


def test_a_broken_config_file_can_be_fixed_with_config_set(enclave_home: Path) -> None:
    config = enclave_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("context_window = 1e400\n")
    broken = enclave("history", "list", home=enclave_home, check=False)
    assert broken.returncode == 1 and "context_window" in broken.stderr and "internal error" not in broken.stderr
    other = enclave("config", "set", "top_k", "20", home=enclave_home, check=False)
    assert other.returncode == 1 and "context_window" in other.stderr  # still broken: says which line
    assert config.read_text() == "context_window = 1e400\n"
    enclave("config", "set", "context_window", "4096", home=enclave_home)
    assert enclave("history", "list", home=enclave_home).returncode == 0

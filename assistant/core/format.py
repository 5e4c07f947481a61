"""How Enclave writes quantities for people: the one size formatter."""

from __future__ import annotations


def human_size(n: int | float) -> str:
    """Bytes in binary units: ``512 B``, ``86.6 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"

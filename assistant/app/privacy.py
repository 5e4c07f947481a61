"""What the front ends ask about privacy: the layers, the self-test, the start-up notice.

Written once here so that ``enclave doctor``, the chat commands and the terminal UI
say the same thing (:mod:`assistant.privacy.report` does the checking).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.engines import seal_required
from assistant.privacy.report import PrivacyReport, check

if TYPE_CHECKING:
    from assistant.core.settings import Settings
    from assistant.engines.base import Engine


def privacy_report(settings: Settings) -> PrivacyReport:
    """Every layer and the self-test inside a sealed probe worker (see ``doctor --privacy``)."""
    return check(seal_required(settings), home=settings.locations.cache / "worker")


def startup_notice(engine: Engine) -> str | None:
    """One plain line when the engine's worker lacks its own network namespace, else ``None``."""
    return engine.isolation.warning if engine.isolation is not None else None


def install_network_guard() -> None:
    """Block every connection to a non-loopback address from this process (a front end's
    first act); cloud fallback opens its one host per conversation, after consent."""
    from assistant.privacy.guard import install_network_guard as install

    install()


def blocked_attempts() -> list[str]:
    """Each connection the guard refused in this process: ``host:port from caller``."""
    from assistant.privacy.guard import GUARD

    return [f"{a.host}:{a.port} from {a.caller}" for a in GUARD.attempts]

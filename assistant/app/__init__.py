"""The application layer: the use cases both front ends call.

The package itself stays light (a front end's option declarations import it before any
command runs): the one list of engine names, from the engine registry.
"""

from assistant.engines import ENGINE_NAMES

__all__ = ["ENGINE_NAMES"]

"""assistant.core.lifeline: a child follows the parent named in its environment."""

from __future__ import annotations

import os
import subprocess
import sys

from assistant.core import lifeline

PROBE = "from assistant.core import lifeline; import os; print(lifeline.follow_parent(), os.environ[lifeline.PARENT_ENV])"


def _probe(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != lifeline.PARENT_ENV}
    if env_value is not None:
        env[lifeline.PARENT_ENV] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)


def test_a_child_of_the_named_parent_runs_and_names_itself_to_its_own_children() -> None:
    done = _probe(str(os.getpid()))
    assert done.returncode == 0, done.stderr
    following, passed_on = done.stdout.split()
    assert following == "True" and passed_on != str(os.getpid())  # its own pid, for a grandchild


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    done = _probe("1" if os.getpid() != 1 else "2")  # a pid that is not this child's parent
    assert done.returncode == 1 and done.stdout == ""


def test_without_the_variable_nothing_changes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from assistant.core import lifeline; print(lifeline.follow_parent())"],
        env={k: v for k, v in os.environ.items() if k != lifeline.PARENT_ENV}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.stdout.strip() == "False"
    assert lifeline.parent_env() == {lifeline.PARENT_ENV: str(os.getpid())}

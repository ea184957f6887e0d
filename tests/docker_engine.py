"""The Docker engine the docker tests use: a private dockerd (as root; data root in
/var/cache/open-mdm/docker, so images are built once per machine), or DOCKER_HOST's engine.
Started once for the session, stopped by pid at its end (mdm_harness.servers.docker). The
conformance tests through ``--mdm-server docker-…`` start the same engine on first use; it is
stopped when the process exits."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mdm_harness.servers import docker as mdm_docker

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def docker_engine():
    eng = mdm_docker.engine()
    yield eng
    mdm_docker.stop_engine()


def compose(engine: mdm_docker.Engine, project: str, files: list[Path], *args: str,
            timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Debian's docker-compose (1.29) against the engine."""
    cmd = ["docker-compose", "--project-name", project, "--project-directory", str(ROOT / "docker")]
    for f in files:
        cmd += ["-f", str(f)]
    env = dict(os.environ, DOCKER_HOST=engine.base_url, COMPOSE_INTERACTIVE_NO_CLI="1")
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd + list(args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result

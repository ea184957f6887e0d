"""Prosody and ejabberd from the project's own images (docker/), through the ``docker`` SDK.

``--server docker-prosody-deb12|deb13`` and ``--server docker-ejabberd-deb12|deb13`` run the server
under test as a container of the image ``docker/prosody/Dockerfile`` or ``docker/ejabberd/Dockerfile``
builds on that Debian release (R9.12: the ``BASE`` build argument; Prosody 0.12 / ejabberd 23.01 on
Debian 12, Prosody 13 / ejabberd 24.12 on Debian 13, servers/kinds.py), tagged
``open-mdm/<name>:deb12`` / ``:deb13`` (``latest`` is the Dockerfiles' default, Debian 13): the
bridge the image installs (Prosody's plugin path, the .beam the ejabberd image compiles with
``erlc``), Debian's server package inside it. The container uses the host's network and the same
generated config as the native backends (prosody.py, ejabberd.py) on free loopback ports, written
to the scenario's temp dir, which is bind-mounted at the same path (config, data, log); accounts
are registered the native way (``prosodyctl register`` in the container before Prosody starts,
ejabberd's HTTP API). Stopping the handle stops and removes the container.

The component runs from its image too, in that image's container (``DockerComponent`` below):
``mdm-harness run`` and ``serve`` drive it through component_remote.py, by signals in the
container (stop, crash, pause, reload) and its admin API on loopback (what it sees of each
session), so every conformance scenario passes through the three images. The compose round trip
(tests/test_docker_compose.py) runs the shipped compose stacks and plays the R10 flow
walkthrough against them.

The install tests (tests/test_wheel_install.py, R9.12) use a fourth image, ``open-mdm/install-test``
(docker/install-test/Dockerfile: Debian's servers and python3, nothing of ours), through
``image_container``, ``exec_output`` and ``ContainerProcess`` below, with ``serve_wheelhouse`` for
pip in it.

The engine: ``DOCKER_HOST`` if set (someone else's engine, used as it is). Otherwise, as root, a
private ``dockerd`` (vfs storage, no iptables, no default bridge) on a socket in a temp dir, with
its data root in ``/var/cache/open-mdm/docker`` (``MDM_DOCKER_CACHE`` moves the cache), so later
runs on the same machine reuse the images; one per process, stopped by pid at exit
(``stop_engine``). A file lock in the cache keeps two runs from sharing a data root at once.

No registry needs to be reachable: the images' base ``debian:bookworm-slim`` or
``debian:trixie-slim`` is, when missing, made from Debian's packages (``mmdebstrap --variant=minbase
bookworm|trixie``, about a minute) and ``docker import``-ed under that tag; the component image's
pip installs from a wheelhouse the host's pip fills for the image's Python (``pip download
--python-version``: 3.11 on Debian 12, 3.13 on Debian 13), served on loopback for the build. Where
a registry is reachable, the Dockerfiles build unchanged without any of this.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import functools
import http.server
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..faults import ComponentProcess
from ..ports import free_ports
from ..profiles import ServerProfile
from ..waiting import poll_until
from . import ejabberd as native_ejabberd
from . import prosody as native_prosody
from .base import Account, ServerHandle, plugin_dir
from .kinds import DEFAULT_RELEASE, RELEASES, Release, Version
from .tls import self_signed

log = logging.getLogger(__name__)

LABEL = "org.open-mdm.harness"  # on every container the harness starts: stale ones are removed
# where each image keeps the bridge (docker/prosody/Dockerfile, docker/ejabberd/ejabberdctl.cfg)
PROSODY_PLUGINS = "/usr/local/lib/prosody/mdm"
EJABBERD_EBIN = "/opt/open-mdm/build/erlang/ebin"


def checkout() -> Path:
    """The repository root: the images' build context."""
    return plugin_dir().parent


def cache_dir() -> Path:
    return Path(os.environ.get("MDM_DOCKER_CACHE", "/var/cache/open-mdm"))


# --- the engine ------------------------------------------------------------------------------

@dataclass
class Engine:
    """A Docker engine: ours (a dockerd child we stop by pid) or the one DOCKER_HOST names."""
    client: Any  # docker.DockerClient
    base_url: str
    proc: subprocess.Popen[bytes] | None = None
    run_dir: Path | None = None
    lock: Any = None  # the open lock file while our dockerd uses the data root
    built: dict[str, str] = field(default_factory=dict)  # image tag -> id, built in this process
    hosts: dict[str, str] = field(default_factory=dict)  # image tag -> its long-lived container

    def stop(self) -> None:
        """Remove the containers we started; stop our dockerd (SIGTERM by pid, SIGKILL after
        30 s) and remove its temp dir."""
        for cid in self.hosts.values():
            with contextlib.suppress(Exception):
                self.client.api.remove_container(cid, force=True, v=True)
        self.hosts.clear()
        with contextlib.suppress(Exception):
            self.client.close()
        if self.proc is not None:
            proc, self.proc = self.proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    log.warning("dockerd pid %s did not stop after SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(FileNotFoundError):
                (cache_dir() / "dockerd.pid").unlink()
        if self.run_dir is not None:
            # dockerd leaves its default network namespace mounted in the exec root
            prefix = str(self.run_dir) + "/"
            with open("/proc/self/mounts") as mounts:
                points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
            for point in sorted(points, reverse=True):
                subprocess.run(["umount", "--lazy", point], capture_output=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        if self.lock is not None:
            self.lock.close()
            self.lock = None


_engine: Engine | None = None
_engine_lock = threading.RLock()


def engine() -> Engine:
    """The process's engine, started on first use (blocking: call it in a thread from async code)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _connect() if os.environ.get("DOCKER_HOST") else _start_dockerd()
            atexit.register(stop_engine)
        return _engine


def stop_engine() -> None:
    """Stop the engine this process started (nothing if it uses DOCKER_HOST's)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.stop()
            _engine = None


def _docker() -> Any:
    try:
        import docker
    except ImportError:
        raise RuntimeError("the docker backends need the docker SDK: pip install -e '.[docker]'") from None
    return docker


def _connect() -> Engine:
    client = _docker().from_env(timeout=600)
    client.ping()
    return Engine(client, os.environ["DOCKER_HOST"])


def _start_dockerd() -> Engine:
    exe = shutil.which("dockerd")
    if exe is None:
        raise RuntimeError("dockerd is not installed (apt-get install docker.io), and DOCKER_HOST is not set")
    if os.geteuid() != 0:
        raise RuntimeError("starting a private dockerd needs root; or set DOCKER_HOST to a running engine")
    cache = cache_dir()
    data_root = cache / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    lock = open(cache / "docker.lock", "w")  # noqa: SIM115 (held for the engine's lifetime)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("another run uses %s; waiting for it", data_root)
        fcntl.flock(lock, fcntl.LOCK_EX)
    _kill_stale_dockerd(cache / "dockerd.pid")
    run_dir = Path(tempfile.mkdtemp(prefix="mdm-dockerd-"))
    sock = run_dir / "docker.sock"
    args = [exe, "--data-root", str(data_root), "--exec-root", str(run_dir / "exec"),
            "--pidfile", str(run_dir / "dockerd.pid"), "--host", f"unix://{sock}",
            "--storage-driver", "vfs", "--iptables=false", "--bridge=none"]
    with open(cache / "dockerd.log", "ab") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C goes to us; we stop it by pid
    (cache / "dockerd.pid").write_text(f"{proc.pid}\n")
    eng = Engine(None, f"unix://{sock}", proc, run_dir, lock)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}; see {cache / 'dockerd.log'}")
            if sock.exists():
                client = _docker().DockerClient(base_url=eng.base_url, timeout=600)
                try:
                    client.ping()
                    eng.client = client
                    break
                except Exception:
                    client.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within 60 s; see {cache / 'dockerd.log'}")
            time.sleep(0.1)
        # Containers in our data root are from runs that died before removing theirs.
        for c in eng.client.containers.list(all=True, filters={"label": LABEL}):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
    except BaseException:
        eng.stop()
        raise
    log.info("dockerd pid %s on %s, data root %s", proc.pid, sock, data_root)
    return eng


def _kill_stale_dockerd(pidfile: Path) -> None:
    """A dockerd left by a run that was killed (we hold the lock now, so it is nobody's)."""
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if cmdline and cmdline[0].endswith(b"dockerd") and str(cache_dir() / "docker").encode() in cmdline:
        log.warning("stopping a stale dockerd (pid %s) left by an earlier run", pid)
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


# --- the images ------------------------------------------------------------------------------

def ensure_base(eng: Engine, release: Release) -> None:
    """``debian:<codename>-slim``: a pulled one if the engine has it, else one made from Debian's
    packages with mmdebstrap and imported under that tag (no registry needed)."""
    docker = _docker()
    base = release.base_image
    try:
        eng.client.images.get(base)
        return
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError(f"no {base} image and no mmdebstrap to make one (apt-get install mmdebstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mdm-rootfs-", dir=cache_dir()) as tmp:
        tar = Path(tmp) / "rootfs.tar"
        # as Debian's own slim images: no documentation, manual pages or translations
        slim = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")]
        slim.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        result = subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet", *slim,
                                 release.codename, str(tar)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed ({result.returncode}):\n{result.stderr[-3000:]}")
        with open(tar, "rb") as f:
            eng.client.api.import_image_from_data(
                f, repository=base.partition(":")[0], tag=base.partition(":")[2],
                changes=['CMD ["bash"]'])
    log.info("made %s from Debian's packages in %.0f s", base, time.monotonic() - started)


# manylinux tags a Debian 12 / 13 x86-64 system takes (glibc 2.36 / 2.41), newest first
_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def _wheelhouse(python: str) -> Path:
    """The component's dependencies as wheels for the image's Python (R9.12: 3.11 on Debian 12,
    3.13 on Debian 13), fetched by the host's pip (its own index config) whatever Python runs
    it, refreshed when pyproject.toml changes."""
    wheels = cache_dir() / f"wheelhouse-py{python}"
    stamp = wheels / ".pyproject.toml"
    pyproject = (checkout() / "pyproject.toml").read_text()
    if stamp.exists() and stamp.read_text() == pyproject:
        return wheels
    wheels.mkdir(parents=True, exist_ok=True)
    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    target = ["--python-version", python, "--implementation", "cp", "--only-binary=:all:",
              *(a for p in _PLATFORMS for a in ("--platform", p))]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                             *target, "--dest", str(wheels), *deps, "setuptools>=68", "wheel"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download of the component's dependencies failed:\n{result.stderr[-3000:]}")
    stamp.write_text(pyproject)
    return wheels


# Build arguments are part of the layer cache key: the wheelhouse is served on a fixed port, so an
# unchanged pyproject.toml keeps the dependencies' layer (a free port instead if it is taken).
WHEELHOUSE_PORT = 38517


@contextlib.contextmanager
def _serving(directory: Path):
    """``directory`` over HTTP on loopback, for the duration (pip's --find-links)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass
    handler = functools.partial(Quiet, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def serve_wheelhouse(release: str) -> contextlib.AbstractContextManager[str]:
    """The component's dependencies as wheels for that release's Python, served on loopback for
    the duration: a URL for pip's ``--find-links`` (with ``--no-index``) in a container on the
    host's network."""
    return _serving(_wheelhouse(RELEASES[release].python))


def image_tag(name: str, release: str) -> str:
    return f"open-mdm/{name}:{release}"


def ensure_image(eng: Engine, name: str, release: str = DEFAULT_RELEASE) -> str:
    """``open-mdm/<name>:<release>`` built from ``docker/<name>/Dockerfile`` on that Debian
    release's base (the layer cache makes a rebuild of unchanged sources take seconds); once per
    process. The default release's image is also tagged ``latest`` (what compose runs). Returns
    the image id."""
    tag = image_tag(name, release)
    if tag in eng.built:
        return eng.built[tag]
    rel = RELEASES[release]
    ensure_base(eng, rel)
    started = time.monotonic()
    buildargs = {"BASE": rel.base_image}
    with contextlib.ExitStack() as stack:
        if name == "component" and not os.environ.get("MDM_DOCKER_PIP_INDEX"):
            url = stack.enter_context(serve_wheelhouse(release))
            buildargs |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": url}
        lines: list[str] = []
        for chunk in eng.client.api.build(path=str(checkout()), dockerfile=f"docker/{name}/Dockerfile",
                                          tag=tag, network_mode="host", rm=True,
                                          forcerm=True, decode=True, buildargs=buildargs):
            if "stream" in chunk:
                lines.extend(chunk["stream"].splitlines())
            if "error" in chunk:
                raise RuntimeError(f"docker build of docker/{name}/Dockerfile failed: {chunk['error']}\n"
                                   + "\n".join(lines[-40:]))
    image = eng.client.images.get(tag)
    if release == DEFAULT_RELEASE:
        image.tag(f"open-mdm/{name}", "latest")
    eng.built[tag] = image.id
    log.info("image %s ready in %.1f s", tag, time.monotonic() - started)
    _prune(eng)
    return image.id


def _prune(eng: Engine) -> None:
    """Drop the images a rebuild left without a tag in our own engine's data root (the last
    build's layers are the cache and stay): on vfs every layer is a full copy of the filesystem,
    so the cache would otherwise grow by hundreds of MB with each change under plugin/."""
    if eng.proc is None:
        return  # DOCKER_HOST's engine is someone else's: its images are not ours to remove
    try:
        freed = eng.client.images.prune(filters={"dangling": True}).get("SpaceReclaimed") or 0
    except _docker().errors.APIError as e:
        log.warning("could not remove untagged images (the cache may grow): %s", e)
        return
    if freed:
        log.info("removed untagged images left by earlier builds (%.0f MB)", freed / 1e6)


def build_images(names: tuple[str, ...] = ("prosody", "ejabberd", "component"),
                 release: str = DEFAULT_RELEASE) -> dict[str, float]:
    """Build (or reuse) the images of one Debian release; seconds each took."""
    eng = engine()
    times = {}
    for name in names:
        started = time.monotonic()
        ensure_image(eng, name, release)
        times[name] = time.monotonic() - started
    return times


# --- the servers -----------------------------------------------------------------------------
#
# Creating a container copies the image's whole filesystem on the vfs driver (~15 s for these
# images here), so each image gets one long-lived container per process (docker-init as its
# pid 1, the host's network, the temp dir bind-mounted at the same path), and every scenario
# starts a fresh server process in it with ``docker exec``: its own config, data dir, log and
# free ports in the scenario's temp dir, stopped by its pid in the container (SIGTERM, SIGKILL
# after 10 s) like the native backends stop theirs. The containers are removed when the
# engine is stopped (at exit), and by the next run if this one was killed.

def _host_container(eng: Engine, name: str, release: str, image: str) -> str:
    """The long-lived container of ``open-mdm/<name>:<release>`` (created once per process)."""
    tag = image_tag(name, release)
    with _engine_lock:
        if tag in eng.hosts:
            return eng.hosts[tag]
        tmp = str(Path(tempfile.gettempdir()).resolve())
        container = eng.client.containers.run(
            image, entrypoint=["sleep", "infinity"], user="0:0", network_mode="host", init=True, detach=True,
            labels={LABEL: tag}, name=f"mdm-{name}-{release}-{os.getpid()}-{int(time.time())}",
            volumes={tmp: {"bind": tmp, "mode": "rw"}})
        eng.hosts[tag] = container.id
        _check_release(eng, container.id, name, RELEASES[release])
        return container.id


def _check_release(eng: Engine, cid: str, name: str, release: Release) -> None:
    """The server in the container is the version servers/kinds.py says the release carries
    (what scenarios see as ``server_version``): a Debian point release may move the minor version,
    never the major one."""
    # the install tests' image (docker/install-test) has Debian's servers and Python, none of ours
    packages = {"prosody": ("prosody",), "ejabberd": ("ejabberd",), "component": ("python3",),
                "install-test": ("prosody", "ejabberd", "python3")}[name]
    for package in packages:
        out = eng.client.api.exec_start(eng.client.api.exec_create(
            cid, ["dpkg-query", "-W", "-f=${Version}", package], user="0:0")["Id"]).decode().strip()
        declared = Version(release.python if package == "python3" else getattr(release, package))
        found = Version(out.split(":", 1)[-1])
        if found[:1] != declared[:1] or (package == "python3" and found[:2] != declared[:2]):
            raise RuntimeError(f"open-mdm/{name}:{release.name} has {package} {out}, not {declared} as "
                               f"harness/mdm_harness/servers/kinds.py says {release.codename} carries")


def _exec(eng: Engine, cid: str, script: str, env: dict[str, str] | None = None, detach: bool = True) -> str:
    exec_id = eng.client.api.exec_create(cid, ["sh", "-c", script], environment=env or {}, user="0:0")["Id"]
    eng.client.api.exec_start(exec_id, detach=detach)
    return exec_id


def _exec_running(eng: Engine, exec_id: str) -> tuple[bool, int | None]:
    info = eng.client.api.exec_inspect(exec_id)
    return info["Running"], info["ExitCode"]


def image_container(name: str, release: str) -> str:
    """The long-lived container of ``open-mdm/<name>:<release>`` (the image built or reused first);
    blocking."""
    eng = engine()
    return _host_container(eng, name, release, ensure_image(eng, name, release))


def exec_output(cid: str, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` as root in the container, until it ends: its exit code and output."""
    api = engine().client.api
    exec_id = api.exec_create(cid, ["sh", "-c", script], environment=env or {}, user="0:0")["Id"]
    out, err = api.exec_start(exec_id, demux=True)
    return subprocess.CompletedProcess(["sh", "-c", script], api.exec_inspect(exec_id)["ExitCode"],
                                       (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))


class ContainerProcess:
    """A process started in a container with ``docker exec`` (``script`` ends in an ``exec`` of
    it), known by its pid there: what ``subprocess.Popen`` is for a process here."""

    def __init__(self, cid: str, script: str, pid_file: Path, env: dict[str, str] | None = None) -> None:
        self.container_id = cid
        self.pid_file = pid_file
        self.exec_id = _exec(engine(), cid, f"echo $$ > {shlex.quote(str(pid_file))}\n{script}", env)

    def poll(self) -> int | None:
        running, code = _exec_running(engine(), self.exec_id)
        return None if running else (code if code is not None else -1)

    def send_signal(self, sig: signal.Signals) -> None:
        _exec(engine(), self.container_id, f"kill -{sig.name[3:]} {int(self.pid_file.read_text())}", None, False)

    def stop(self) -> None:
        """SIGTERM by its pid (SIGKILL after 10 s), until the exec has ended."""
        _stop_exec(self.container_id, self.exec_id, self.pid_file)


class ContainerServerMixin:
    """A server process started with ``docker exec``: stopped by its pid inside the container."""
    container_id: str
    exec_id: str
    pid_file: Path | None
    kind: str

    async def stop(self) -> None:
        if not self.exec_id:
            return
        exec_id, self.exec_id = self.exec_id, ""
        await asyncio.to_thread(_stop_exec, self.container_id, exec_id, self.pid_file)


def _stop_exec(cid: str, exec_id: str, pid_file: Path | None,
               signals: tuple[str, ...] = ("TERM", "KILL")) -> bool:
    """Each of ``signals`` to the pid in ``pid_file``, 10 s apart, until the exec has ended;
    whether it has."""
    eng = engine()
    try:
        pid = int(pid_file.read_text()) if pid_file is not None else 0
    except (OSError, ValueError):
        pid = 0
    for sig in signals if pid else ():
        if not _exec_running(eng, exec_id)[0]:
            return True
        _exec(eng, cid, f"kill -{sig} {pid} 2>/dev/null", detach=False)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and _exec_running(eng, exec_id)[0]:
            time.sleep(0.02)
        if sig == "TERM" and _exec_running(eng, exec_id)[0]:
            log.warning("pid %s in container %s did not stop after SIGTERM; killing it", pid, cid[:12])
    return not _exec_running(eng, exec_id)[0]


def _kill_exec(cid: str, exec_id: str, pid_file: Path | None) -> None:
    if not _stop_exec(cid, exec_id, pid_file, ("KILL",)):
        raise RuntimeError(f"the process in container {cid[:12]} did not end after SIGKILL (pid file {pid_file})")


@dataclass
class DockerServerHandle(ContainerServerMixin, ServerHandle):
    container_id: str = ""
    exec_id: str = ""
    pid_file: Path | None = None


@dataclass
class DockerEjabberdHandle(ContainerServerMixin, native_ejabberd.EjabberdHandle):
    container_id: str = ""
    exec_id: str = ""
    pid_file: Path | None = None


def _in_tmp(workdir: Path) -> None:
    tmp = Path(tempfile.gettempdir()).resolve()
    if not workdir.resolve().is_relative_to(tmp):
        raise RuntimeError(f"the docker backends need the server's directory under {tmp} "
                           f"(bind-mounted into the container), not {workdir}")


async def _start_in_container(name: str, release: str, workdir: Path, script: str,
                              env: dict[str, str] | None = None) -> tuple[str, str, Path]:
    """``script`` (ending in ``exec`` of the server) in the image's container; its pid in a file."""
    _in_tmp(workdir)
    eng = await asyncio.to_thread(engine)
    image = await asyncio.to_thread(ensure_image, eng, name, release)
    cid = await asyncio.to_thread(_host_container, eng, name, release, image)
    pid_file = workdir / "server.pid"
    script = f"echo $$ > {shlex.quote(str(pid_file))}\ncd {shlex.quote(str(workdir))}\nset -e\n" + script
    exec_id = await asyncio.to_thread(_exec, eng, cid, script, env)
    return cid, exec_id, pid_file


async def _wait_ready(handle: DockerServerHandle | DockerEjabberdHandle, ready: Any, what: str,
                      timeout: float) -> None:
    """Until ``ready()``; a clear error with the server's output if it exits first."""
    eng = engine()

    async def check() -> bool:
        if await ready():
            return True
        running, code = await asyncio.to_thread(_exec_running, eng, handle.exec_id)
        if not running:
            out = "\n".join((handle.workdir / f).read_text(errors="replace")[-2000:]
                            for f in ("server.out",) if (handle.workdir / f).exists())
            raise RuntimeError(f"{handle.kind} exited with {code} in its container:\n{out}\n{handle.log_tail()}")
        return False
    await poll_until(check, timeout, f"{handle.kind}: {what} within {timeout}s; see {handle.log_file}", 0.05)


async def _accepts(port: int) -> bool:
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    w.close()
    return True


def prosody_sasl2_extra(release: str) -> tuple[str, ...]:
    """R9.11: what the image's Prosody runs of prosody-modules' SASL2 modules besides mod_sasl2
    and mod_sasl2_bind2 (native_prosody.sasl2_modules reads it from the host's files): 13 runs
    mod_sasl2_sm and mod_sasl2_fast, 0.12.3 neither."""
    return ("sasl2_sm", "sasl2_fast") if Version(RELEASES[release].prosody) >= (13,) else ()


async def start_docker_prosody(accounts: list[Account], workdir: Path, *, bridge: bool = True,
                               extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                               ack_timeout: float = 2.0, profile: ServerProfile | None = None,
                               features: tuple[str, ...] = (), release: str = "deb12",
                               **config: Any) -> ServerHandle:
    """As prosody.start_prosody, with Prosody and the bridge from the image; ``config``: further
    render_config options (e.g. hibernation_timeout), passed on."""
    workdir.mkdir(parents=True, exist_ok=True)
    c2s_port, component_port = free_ports(2)
    needs_http = (profile is not None and profile.needs_http) or "websocket" in features
    http_port = free_ports(1)[0] if needs_http else None
    direct_tls_port = free_ports(1)[0] if "direct-tls" in features else None
    tls = await self_signed(workdir) if direct_tls_port else None
    (workdir / "data").mkdir(exist_ok=True)
    level = "debug" if os.environ.get("MDM_HARNESS_DEBUG") else "info"
    text = native_prosody.render_config(workdir, c2s_port, component_port, bridge=bridge,
                                        extra_modules=extra_modules, without_modules=without_modules,
                                        log_level=level, ack_timeout=ack_timeout, profile=profile,
                                        http_port=http_port, features=features, direct_tls_port=direct_tls_port,
                                        tls=tls, run_as_root=True,
                                        sasl2_extra=prosody_sasl2_extra(release), **config)
    # the bridge the image installed, not the checkout's
    text, n = re.subn(r"^plugin_paths = .*$", f'plugin_paths = {{ "{PROSODY_PLUGINS}" }}', text, count=1,
                      flags=re.M)
    if n != 1:
        raise RuntimeError("no plugin_paths line in the generated Prosody config")
    cfg = shlex.quote(str(workdir / "prosody.cfg.lua"))
    (workdir / "prosody.cfg.lua").write_text(text)
    # accounts as the native backend makes them (prosodyctl register, before the server starts)
    out = shlex.quote(str(workdir / "server.out"))
    script = "".join(f"prosodyctl --root --config {cfg} register {shlex.quote(a.user)} "
                     f"{native_prosody.DOMAIN} {shlex.quote(a.password)} >>{out} 2>&1\n" for a in accounts)
    script += f"exec prosody --config {cfg} >>{out} 2>&1\n"
    cid, exec_id, pid_file = await _start_in_container("prosody", release, workdir, script)
    domain = native_prosody.DOMAIN
    handle = DockerServerHandle(f"docker-prosody-{release}", domain, c2s_port, component_port, "mdm." + domain,
                                native_prosody.SECRET, "conference." + domain, workdir, None,
                                workdir / "prosody.log", list(accounts), direct_tls_port=direct_tls_port or 0,
                                websocket_url=f"ws://127.0.0.1:{http_port}/xmpp-websocket"
                                if "websocket" in features else "",
                                push_jid="push." + domain if "push" in features else "",
                                push_port=component_port if "push" in features else 0,
                                container_id=cid, exec_id=exec_id, pid_file=pid_file)
    try:
        for port in (c2s_port, component_port):
            await _wait_ready(handle, functools.partial(_accepts, port), f"did not listen on {port}", 60.0)
    except BaseException:
        await handle.stop()
        raise
    log.debug("docker-prosody-%s in %s: c2s %s, component %s, dir %s", release, cid[:12], c2s_port,
              component_port, workdir)
    return handle


async def start_docker_ejabberd(accounts: list[Account], workdir: Path, *, bridge: bool = True,
                                extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                                ack_timeout: float = 2.0, features: tuple[str, ...] = (),
                                release: str = "deb12", **config: Any) -> ServerHandle:
    """As ejabberd.start_ejabberd, with ejabberd and the bridge's .beam from the image; ``config``:
    further render_config options (e.g. sql), passed on."""
    workdir.mkdir(parents=True, exist_ok=True)
    c2s_port, component_port, http_port = free_ports(3)
    direct_tls_port = free_ports(1)[0] if "direct-tls" in features else None
    push_port = free_ports(1)[0] if "push" in features else None
    tls_pem = None
    if direct_tls_port or "sasl2" in features:  # R9.5 direct TLS, R9.11 STARTTLS for SASL2
        cert, key = await self_signed(workdir)
        tls_pem = workdir / "localhost.pem"  # ejabberd takes the certificate and its key in one file
        tls_pem.write_text(cert.read_text() + key.read_text())
        tls_pem.chmod(0o600)
    cfg = workdir / "ejabberd.yml"
    level = "debug" if os.environ.get("MDM_HARNESS_DEBUG") else "info"
    cfg.write_text(native_ejabberd.render_config(c2s_port, component_port, http_port, bridge=bridge,
                                                 extra_modules=extra_modules, without_modules=without_modules,
                                                 log_level=level, ack_timeout=ack_timeout, features=features,
                                                 direct_tls_port=direct_tls_port, tls_pem=tls_pem,
                                                 push_port=push_port,
                                                 fast=Version(RELEASES[release].ejabberd) >= (24, 12), **config))
    spool = workdir / "spool"
    spool.mkdir(exist_ok=True)
    log_file = workdir / "ejabberd.log"
    # as ejabberd.launch starts it: erl directly, not distributed, the image's bridge on the path
    env = {"EJABBERD_CONFIG_PATH": str(cfg), "EJABBERD_LOG_PATH": str(log_file),
           "ERL_CRASH_DUMP": str(workdir / "erl_crash.dump"), "ERL_CRASH_DUMP_BYTES": "0", "HOME": str(workdir)}
    pa = f"-pa {EJABBERD_EBIN} " if bridge else ""
    script = ('lib=$(ls -d /usr/lib/*/ejabberd-*/ebin | sort -V | tail -n1)\n'
              'export ERL_LIBS="$(dirname "$(dirname "$lib")")"\n'
              f"exec erl -noinput -noshell +K true {pa}-mnesia dir {shlex.quote(json.dumps(str(spool)))} "
              f"-s ejabberd >>{shlex.quote(str(workdir / 'server.out'))} 2>&1\n")
    cid, exec_id, pid_file = await _start_in_container("ejabberd", release, workdir, script, env)
    domain = native_ejabberd.DOMAIN
    handle = DockerEjabberdHandle(f"docker-ejabberd-{release}", domain, c2s_port, component_port, "mdm." + domain,
                                  native_ejabberd.SECRET, "conference." + domain, workdir, None, log_file,
                                  list(accounts), http_port=http_port, direct_tls_port=direct_tls_port or 0,
                                  websocket_url=f"ws://127.0.0.1:{http_port}/ws" if "websocket" in features else "",
                                  push_jid="push." + domain if "push" in features else "",
                                  push_port=push_port or 0, container_id=cid, exec_id=exec_id, pid_file=pid_file)

    async def started() -> bool:
        return log_file.exists() and " is started in the node " in log_file.read_text(errors="replace")
    try:
        await _wait_ready(handle, started, "did not start", 90.0)
        for port in (http_port, c2s_port, component_port):
            await _wait_ready(handle, functools.partial(_accepts, port), f"did not listen on {port}", 60.0)
        await handle.register(accounts)
    except BaseException:
        await handle.stop()
        raise
    log.debug("docker-ejabberd-%s in %s: c2s %s, component %s, dir %s", release, cid[:12], c2s_port,
              component_port, workdir)
    return handle


# --- the component from its image --------------------------------------------------------------

class DockerComponent(ComponentProcess):
    """``mdm-component`` from the component image (docker/component/Dockerfile), in that image's
    container on the host's network, with a generated config and its store in ``workdir`` (under
    the bind-mounted temp dir). Its signals go to its pid in the container; component_remote.py
    drives it for scenario runs and ``mdm-harness serve --server docker-…``."""

    def __init__(self, workdir: Path, name: str, release: str = DEFAULT_RELEASE, **config: object) -> None:
        super().__init__(workdir, name, **config)
        self.release = release
        self.container_id = ""
        self.exec_id = ""
        self.pid_file: Path | None = None

    async def start(self) -> None:
        out = shlex.quote(str(self.log_path))
        script = f"exec mdm-component --config {shlex.quote(str(self.config_path))} >>{out} 2>&1\n"
        self.container_id, self.exec_id, self.pid_file = await _start_in_container(
            "component", self.release, self.config_path.parent, script)

    @property
    def pid(self) -> int | None:
        return None  # a pid in the container, not ours

    async def running(self) -> bool:
        return bool(self.exec_id) and (await asyncio.to_thread(_exec_running, engine(), self.exec_id))[0]

    async def exited(self) -> bool:
        return bool(self.container_id) and not await self.running()

    @property
    def where(self) -> str:
        image = image_tag("component", self.release)
        return f"the {image} image (container {self.container_id[:12]}), log {self.log_path}"

    async def signal(self, sig: signal.Signals) -> None:
        """``kill -<sig>`` of its pid, in the container."""
        if self.exec_id and self.pid_file is not None:
            pid = int(self.pid_file.read_text())
            await asyncio.to_thread(_exec, engine(), self.container_id, f"kill -{sig.name[3:]} {pid}", None, False)

    async def kill(self) -> None:
        """SIGKILL (R9.6: it dies answering nothing more); until its ``docker exec`` has ended."""
        if not self.exec_id:
            return
        await asyncio.to_thread(_kill_exec, self.container_id, self.exec_id, self.pid_file)
        self.exec_id = ""  # only once it has ended: a failed kill leaves stop() to try again

    async def stop(self) -> None:
        """SIGTERM by its pid in the container (SIGKILL after 10 s), as the servers are stopped."""
        if not self.exec_id:
            return
        exec_id, self.exec_id = self.exec_id, ""
        await asyncio.to_thread(_stop_exec, self.container_id, exec_id, self.pid_file)

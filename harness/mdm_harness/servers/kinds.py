"""The servers the harness runs, by name, and the version each one is (R9.12).

A *kind* names a server and how it is started: ``prosody`` and ``ejabberd`` are Debian's packages
on this machine (whatever release the host runs), ``ejabberd-cluster`` two or more of those nodes,
and ``docker-<server>-deb12`` / ``docker-<server>-deb13`` the project's images built on Debian 12
"bookworm" or Debian 13 "trixie" (docker/, harness/mdm_harness/servers/docker.py). The two Debian
releases are the two server generations R9.12 asks for: Prosody 0.12 / ejabberd 23.01 and
Prosody 13 / ejabberd 24.12. ``docker-prosody`` and ``docker-ejabberd`` (the names before there were
two) mean the Debian 12 images.

Scenarios see ``server`` (the family: ``prosody`` or ``ejabberd``) and ``server_version`` (a
:class:`Version`, compared as numbers: ``{% if server_version >= (24,) %}``), so a scenario names a
real difference between generations the way it names one between servers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mdm.setup_cmd import ejabberd_version, prosody_version


@dataclass(frozen=True)
class Release:
    """A Debian release the images are built on, and the server versions its packages carry."""
    name: str  # deb12, deb13
    codename: str  # bookworm, trixie
    prosody: str  # upstream versions, as dpkg shows them before the Debian revision
    ejabberd: str
    python: str  # Debian's python3 there: the component image's interpreter

    @property
    def base_image(self) -> str:
        return f"debian:{self.codename}-slim"


RELEASES = {
    "deb12": Release("deb12", "bookworm", prosody="0.12.3", ejabberd="23.01", python="3.11"),
    "deb13": Release("deb13", "trixie", prosody="13.0.1", ejabberd="24.12", python="3.13"),
}
# What the Dockerfiles build without a BASE build argument (and compose): the current stable release.
DEFAULT_RELEASE = "deb13"


@dataclass(frozen=True)
class ServerKind:
    name: str
    family: str  # prosody | ejabberd: the server, as scenarios see it
    backend: str  # native | cluster | docker
    release: str = ""  # docker: the image's Debian release; native: the host's packages

    @property
    def docker(self) -> bool:
        return self.backend == "docker"

    @property
    def cluster(self) -> bool:
        return self.backend == "cluster"


KINDS = {k.name: k for k in (
    ServerKind("prosody", "prosody", "native"),
    ServerKind("ejabberd", "ejabberd", "native"),
    ServerKind("ejabberd-cluster", "ejabberd", "cluster"),
    *(ServerKind(f"docker-{family}-{release}", family, "docker", release)
      for release in RELEASES for family in ("prosody", "ejabberd")),
)}
ALIASES = {"docker-prosody": "docker-prosody-deb12", "docker-ejabberd": "docker-ejabberd-deb12"}
SERVER_KINDS = tuple(KINDS) + tuple(ALIASES)


def kind_of(name: str) -> ServerKind:
    """The kind a server name (or an alias) stands for; ValueError naming the known ones."""
    kind = KINDS.get(ALIASES.get(name, name))
    if kind is None:
        raise ValueError(f"unknown server kind {name!r} (available: {', '.join(SERVER_KINDS)})")
    return kind


def family(name: str) -> str:
    """``prosody`` or ``ejabberd`` for any kind name; ``""`` for none (a scenario parsed alone)."""
    return kind_of(name).family if name else ""


class Version(tuple):
    """A version as numbers (``Version.parse("24.12") >= (24,)``) that prints as it is written."""

    text: str

    def __new__(cls, text: str) -> Version:
        self = super().__new__(cls, (int(n) for n in re.findall(r"\d+", text)))
        self.text = text
        return self

    @classmethod
    def parse(cls, text: str) -> Version:
        return cls(text)

    def __str__(self) -> str:
        return self.text


@functools.cache
def _installed_version(family: str) -> str:
    """The upstream version of the server installed here, read as ``mdm-component setup`` reads
    it (never ``prosody --version``: on 0.12 that starts a server with the system config)."""
    found = prosody_version() if family == "prosody" else ejabberd_version()
    if not found:
        raise RuntimeError(f"{family} is not installed here")
    return found.split(":", 1)[-1].split("-")[0]  # no epoch, no Debian revision (23.01-1 -> 23.01)


def server_version(name: str) -> Version:
    """The version of the server a kind runs: the image's release's for docker kinds (the
    docker backend checks the container agrees), the host's package otherwise. Empty for none."""
    if not name:
        return Version("")
    kind = kind_of(name)
    if kind.docker:
        return Version(getattr(RELEASES[kind.release], kind.family))
    return Version(_installed_version(kind.family))

"""Images and the compose stack on a machine that reaches no image registry, with podman.

    python -m devtools.containers build     # podman if missing, the local base image, every image
    python -m devtools.containers up        # compose.yaml under the project name "manyheads"
    python -m devtools.containers down

What it takes (measured, ../shared/docs/stack-notes.md): podman with runc (crun fails on this
kernel's hybrid cgroups), no default ulimits, and a Python base image built locally from Debian
packages with debootstrap, passed to every Dockerfile as PYTHON_IMAGE; pip inside a build reaches
PyPI through the host's network, CA bundle and pip configuration. The PostgreSQL service uses a
stand-in image built the same way (devtools/containers/postgres.Dockerfile). With Docker and a
registry none of this is needed: `docker compose up --build`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "containers"
BASE_IMAGE = "localhost/python-base:3.11-bookworm"
POSTGRES_IMAGE = "localhost/manyheads-postgres-local:15"
IMAGES = {  # tag (as compose.yaml names it) -> Dockerfile
    "manyheads-router": "env/docker/router.Dockerfile",
    "manyheads-embedder-cpu": "env/docker/embedder-cpu.Dockerfile",
    "manyheads-training": "env/docker/training.Dockerfile",
}
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# crun, podman's default runtime, fails here ("cgroups in hybrid mode not supported"), and setting
# the default ulimits is not permitted: runc and none, for podman and podman-compose alike.
CONTAINERS_CONF_TEXT = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, **kwargs)


def ensure_podman() -> None:
    """podman, runc and debootstrap (Debian packages), and a containers.conf without default
    ulimits (setting them is not permitted here)."""
    if not all(shutil.which(tool) for tool in ("podman", "runc", "debootstrap")):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise SystemExit("podman, runc and debootstrap are needed: apt-get install podman runc debootstrap")
        run(["apt-get", "update", "-qq"])
        run(
            ["apt-get", "install", "-y", "-qq", "podman", "runc", "debootstrap"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    text = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else ""
    if "default_ulimits" in text and "runc" in text:
        return
    if "[containers]" in text or "[engine]" in text or os.geteuid() != 0:
        raise SystemExit(
            f'{CONTAINERS_CONF} needs default_ulimits = [] under [containers] and runtime = "runc" under [engine]'
        )
    CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
    with CONTAINERS_CONF.open("a") as conf:
        conf.write(CONTAINERS_CONF_TEXT)


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag]).returncode == 0


def ensure_base_image() -> None:
    """Debian bookworm's Python 3.11 as an image, from Debian packages (about a minute)."""
    if image_exists(BASE_IMAGE):
        return
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                str(rootfs),
            ],
            stdout=subprocess.DEVNULL,
        )
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        (rootfs / "usr/local/bin/pip").symlink_to("/usr/bin/pip3")
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, stdout=subprocess.DEVNULL)
        tar.wait()


def build(tag: str, dockerfile: str, context: Path = ROOT, *, pip_as_host: bool = True) -> None:
    ignore = ROOT / f"{dockerfile}.dockerignore"
    command = [
        "podman", "build", "--network", "host", "--pull=never", "--format", "docker",
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "-f", str(ROOT / dockerfile), "-t", tag,
    ]  # fmt: skip
    for host_file in ("/etc/ssl/certs", "/etc/pip.conf"):  # pip reaches PyPI as the host does
        if pip_as_host and Path(host_file).exists():
            command += ["-v", f"{host_file}:{host_file}:ro"]
    if ignore.exists():
        command += ["--ignorefile", str(ignore)]
    run([*command, str(context)], stdout=subprocess.DEVNULL)


def build_all() -> None:
    ensure_podman()
    ensure_base_image()
    build(POSTGRES_IMAGE, "devtools/containers/postgres.Dockerfile", HERE, pip_as_host=False)  # apt writes certs
    for tag, dockerfile in IMAGES.items():
        build(tag, dockerfile)


def compose_env(publish: str = "127.0.0.1:8000") -> dict[str, str]:
    """The environment compose.yaml reads: the local images, and where the router is published."""
    return {
        **os.environ,
        "POSTGRES_IMAGE": POSTGRES_IMAGE,
        "PYTHON_IMAGE": BASE_IMAGE,
        "API_PUBLISH": publish,
    }


def compose(
    project: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """podman-compose (from the venv) on compose.yaml under `project`."""
    command = [
        str(Path(sys.executable).parent / "podman-compose"),
        "-p",
        project,
        "-f",
        str(ROOT / "compose.yaml"),
        *args,
    ]
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, env=env or compose_env(), cwd=ROOT, check=check, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.containers", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "up", "down"))
    args = parser.parse_args(argv)
    if args.action == "build":
        build_all()
    elif args.action == "up":
        print(compose("manyheads", "up", "-d").stderr[-3000:])
    else:
        print(compose("manyheads", "down").stderr[-3000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build and push a model package's image with whichever builder this machine has.

In a cluster the registration template runs in the geomlops builder image, which carries
Kaniko's executor; on one machine there is usually no builder, and the step says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from geomlops.errors import InvalidPackageError

KANIKO = Path("/kaniko/executor")


class ImageBuild(BaseModel):
    """What happened to the image of a package."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    destination: str
    built: bool
    builder: str | None = None
    digest: str | None = None
    reason: str | None = None

    def said(self) -> str:
        """One line: the image built (with its digest and builder), or why it was not."""
        if self.built:
            digest = f"@{self.digest}" if self.digest else ""
            return f"{self.destination}{digest} built by {self.builder or 'a builder'}"
        return f"{self.destination} not built: {self.reason or 'no reason given'}"


def find_builder() -> tuple[str | None, str]:
    """The first image builder available here, and why the others were not used."""
    notes = []
    if KANIKO.is_file():
        return "kaniko", ""
    notes.append(f"{KANIKO} not found")
    if shutil.which("buildah"):
        return "buildah", ""
    notes.append("buildah not on PATH")
    docker = shutil.which("docker")
    if docker:
        info = subprocess.run([docker, "info"], capture_output=True, text=True)
        if info.returncode == 0:
            return "docker", ""
        notes.append("docker client present but no Docker engine answers")
    else:
        notes.append("docker not on PATH")
    return None, "; ".join(notes)


def build_image(package: str, destination: str, *, push: bool = True, cache_repo: str = "") -> ImageBuild:
    """Build ``package/Dockerfile`` and push it to ``destination`` (``registry/repo:tag``).

    Args:
        package: the model package folder (the build context).
        destination: image reference to push.
        push: push after building (Kaniko always pushes unless told not to).
        cache_repo: registry repository for Kaniko's layer cache; empty: no cache.

    Returns:
        The build record; ``built=False`` with the reason when no builder is available.

    Raises:
        InvalidPackageError: the package has no Dockerfile.
        RuntimeError: the builder failed (its output tail in the message).
    """
    context = Path(package).resolve()
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise InvalidPackageError(f"{dockerfile}: file not found (a model package needs a Dockerfile)")
    builder, why_not = find_builder()
    if builder is None:
        return ImageBuild(
            destination=destination, built=False, reason=f"no image builder on this machine: {why_not}"
        )
    if builder == "kaniko":
        args = [str(KANIKO), f"--context=dir://{context}", f"--dockerfile={dockerfile}"]
        args += [f"--destination={destination}"] if push else ["--no-push"]
        args += ["--cache=true", f"--cache-repo={cache_repo}"] if cache_repo else []
        args += ["--digest-file=/tmp/image-digest"]
    elif builder == "buildah":
        args = ["buildah", "bud", "-t", destination, str(context)]
    else:
        args = ["docker", "build", "-t", destination, str(context)]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{builder} failed to build {destination}:\n{out.stderr[-2000:]}")
    if push and builder in ("buildah", "docker"):
        pushed = subprocess.run([builder, "push", destination], capture_output=True, text=True)
        if pushed.returncode != 0:
            raise RuntimeError(f"{builder} failed to push {destination}:\n{pushed.stderr[-2000:]}")
    digest_file = Path("/tmp/image-digest")
    digest = digest_file.read_text().strip() if builder == "kaniko" and digest_file.exists() else None
    return ImageBuild(destination=destination, built=True, builder=builder, digest=digest)

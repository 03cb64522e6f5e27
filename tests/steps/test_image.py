"""An image build in one line, as a registration run ends with it."""

from __future__ import annotations

from steps.image import ImageBuild

IMAGE = "registry.example.org/roof:1"


def test_a_build_says_what_was_built_or_why_not() -> None:
    built = ImageBuild(destination=IMAGE, built=True, builder="kaniko", digest="sha256:ab")
    assert built.said() == f"{IMAGE}@sha256:ab built by kaniko"
    skipped = ImageBuild(destination=IMAGE, built=False, reason="no image builder on this machine: x")
    assert skipped.said() == f"{IMAGE} not built: no image builder on this machine: x"

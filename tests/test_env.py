"""`make setup` installs exactly the locked versions (requirements.lock)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.version import Version

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_installed_package_is_at_its_locked_version():
    pins = locked()
    assert {"torch", "numpy", "pandas", "dvc", "dvclive", "matplotlib", "pytest"} <= set(pins)
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in metadata.distributions()}
    for name, version in pins.items():
        assert name in installed, f"{name} is locked but not installed"
        # a pin without a local label (torch==2.13.0) matches the local build (2.13.0+cpu), as pip does
        assert Version(installed[name]).public == Version(version).public, f"{name} {installed[name]} != {version}"
    extra = set(installed) - set(pins) - {"rnnlm", "pip", "setuptools", "wheel"}
    assert not extra, f"installed but not locked: {sorted(extra)}"

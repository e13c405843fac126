"""The ``[update]`` settings the updater works with.

Read from the kiosk configuration's ``update`` section when it has one; a configuration from
before that section existed gets the defaults (updates on, but no release key pinned, so
every offer is refused as unverifiable: nothing unsigned is ever installed).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from device.update.bootguard import STATE_NAME


@dataclass(frozen=True)
class UpdateSettings:
    """What `[update]` in kiosk.toml says (docs/kiosk-config.md), plus the state dir."""

    enabled: bool = True
    release_key: str = ""
    root: str = "/opt/siheyi"
    wheelhouse: str = "/opt/siheyi/wheelhouse"
    index_url: str = ""
    python: str = "/usr/bin/python3"
    idle_s: float = 10.0
    install_timeout_s: float = 900.0
    state_dir: str = "/var/lib/siheyi"

    @classmethod
    def from_config(cls, config: Any) -> UpdateSettings:
        """From a ``DeviceConfig`` (its ``update`` section and ``state_dir``)."""
        section = getattr(config, "update", None)
        names = {f.name for f in fields(cls)} - {"state_dir"}
        values = {n: getattr(section, n) for n in names if hasattr(section, n)}
        return cls(**values, state_dir=str(getattr(config, "state_dir", cls.state_dir)))

    @property
    def update_dir(self) -> Path:
        return Path(self.state_dir) / "update"

    @property
    def state_path(self) -> Path:
        return self.update_dir / STATE_NAME

    @property
    def downloads(self) -> Path:
        return self.update_dir / "downloads"

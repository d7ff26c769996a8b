"""Device profiles: cost models measured by `profile`, matched to a run by model, device, dtype and
torch thread count (the facts its executor recorded)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, inspect, select

from storage.schema import DeviceProfileRow, table_of

_profiles = table_of(DeviceProfileRow)


@dataclass(frozen=True)
class DeviceProfile:
    id: int
    model: str
    device: str
    dtype: str
    torch_threads: int
    cost_model: dict[str, Any]  # LinearCostModel.to_dict()

    def label(self) -> str:
        return f"device profile #{self.id} ({self.model} on {self.device} {self.dtype}, {self.torch_threads} threads)"


def save_profile(db: Engine, model: str, device: str, dtype: str, torch_threads: int,
                 cost_model: dict[str, Any]) -> int:
    with db.begin() as conn:
        return int(conn.execute(insert(_profiles).returning(_profiles.c.id), {
            "created_at": datetime.now(UTC), "model": model, "device": device, "dtype": dtype,
            "torch_threads": torch_threads, "cost_model": cost_model,
        }).scalar_one())


def matching_profile(db: Engine, model: str | None, device: str | None, dtype: str | None,
                     torch_threads: int | None) -> DeviceProfile | None:
    """The newest profile of exactly this model, device, dtype and thread count, if any."""
    if None in (model, device, dtype, torch_threads) or not inspect(db).has_table(_profiles.name):
        return None
    with db.connect() as conn:
        row = conn.execute(select(_profiles).where(
            _profiles.c.model == model, _profiles.c.device == device, _profiles.c.dtype == dtype,
            _profiles.c.torch_threads == torch_threads).order_by(_profiles.c.id.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    return DeviceProfile(int(row["id"]), row["model"], row["device"], row["dtype"], int(row["torch_threads"]),
                         dict(row["cost_model"]))

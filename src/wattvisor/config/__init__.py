"""Settings: one TOML file plus ``WATTVISOR_*`` environment overrides."""

from wattvisor.config.settings import (
    ConfigError,
    EnergySettings,
    HostNetworkSettings,
    HostSettings,
    Settings,
    StoreSettings,
    load_settings,
)

__all__ = [
    "ConfigError",
    "EnergySettings",
    "HostNetworkSettings",
    "HostSettings",
    "Settings",
    "StoreSettings",
    "load_settings",
]

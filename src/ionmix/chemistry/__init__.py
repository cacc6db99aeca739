"""Chemistry: the ion library (force-field topologies and coordinate templates)."""

from ionmix.chemistry.ions import (
    Ion,
    IonLibraryError,
    list_ions,
    load_ion,
    load_user_ion,
)

__all__ = ["Ion", "IonLibraryError", "list_ions", "load_ion", "load_user_ion"]

"""Typed, validated configuration (pydantic). Unknown keys are errors, as in OpenMM.

A sampling config (TOML) has two tables:

```toml
[mixture]
units = {LiPF6 = {Li = 1, PF6 = 1}, EMIMPF6 = {EMIM = 1, PF6 = 1}}  # library ion names
grid_step = 0.1          # every composition of the units on this grid (or `compositions`)
n_ion_pairs = 20         # formula units per box (= ion pairs for 1:1 salts)
charge_scale = 0.8

[sampling]
temperature_K = 300.0
production_ps = 400.0
snapshot_interval_ps = 20.0
```

Every other key has a default taken from the paper where it states one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ionmix import design
from ionmix.cluster import ClusterConfig
from ionmix.errors import InputError


class ConfigError(InputError):
    """A config file is invalid; the message names the file and the key at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserIon(_Strict):
    """An ion the library does not ship: a GROMACS .itp plus coordinates."""

    itp: Path
    coordinates: Path


class MixtureConfig(_Strict):
    """What is mixed, at which compositions, in how big a box."""

    units: dict[str, dict[str, int]] = Field(
        description="neutral units: name → {ion name: count}; ion names from the library "
        "(or `user_ions`)")
    compositions: list[dict[str, float]] | None = Field(
        None, description="explicit compositions as unit mole fractions: numbers, or "
        "strings such as \"2/3\" (see design.check_composition for rounded decimals)")
    grid_step: float | None = Field(
        None, description="all compositions of the units on this mole-fraction grid")
    # strict: TOML's `true` is not 1 ion pair
    n_ion_pairs: int | None = Field(
        None, gt=0, strict=True, description="formula units per box (ion pairs for 1:1 salts)")
    n_ions: int | None = Field(None, gt=0, strict=True, description="total ions per box "
                               "(instead of n_ion_pairs); must give a whole number of formula "
                               "units")
    charge_scale: float = Field(0.8, gt=0, le=1.0, description="factor on all charges")
    user_ions: dict[str, UserIon] = Field(default_factory=dict)

    @field_validator("compositions", mode="before")
    @classmethod
    def _fractions_as_numbers(cls, value: Any) -> Any:
        """Read "2/3" as 2/3; numbers stay as typed (their decimals carry the precision)."""
        if not isinstance(value, list):
            return value  # pydantic reports the wrong type
        out = []
        for i, comp in enumerate(value):
            if isinstance(comp, dict):
                try:
                    comp = {u: _fraction_or_raw(x, u) for u, x in comp.items()}
                except design.DesignError as exc:
                    raise ValueError(f"composition {i + 1}: {exc}") from None
            out.append(comp)
        return out

    def composition_list(self, mixture: design.Mixture) -> list[dict[str, float]]:
        """The compositions to sample, validated against `mixture`."""
        if self.compositions is not None and self.grid_step is not None:
            raise ConfigError("[mixture] takes either compositions or grid_step, not both")
        if self.compositions is not None:
            comps = [{u: float(c.get(u, 0.0)) for u in mixture.units} for c in self.compositions]
            for c in self.compositions:
                mixture.fractions(c)
            return comps
        return design.composition_grid(mixture.units, self.grid_step or 0.1)

    def n_units_for(self, mixture: design.Mixture, composition: dict[str, float]) -> int:
        """Formula units in the box at `composition`."""
        if (self.n_ion_pairs is None) == (self.n_ions is None):
            raise ConfigError("[mixture] needs exactly one of n_ion_pairs or n_ions")
        if self.n_ion_pairs is not None:
            return self.n_ion_pairs
        x = mixture.fractions(composition)
        ions_per_unit = float(x @ mixture.stoichiometry.sum(axis=1) / x.sum())
        n = max(1, round(self.n_ions / ions_per_unit))
        where = f"[mixture] n_ions = {self.n_ions} at {composition}"
        # The box is right only if n whole units hold exactly n_ions ions; checking the
        # counts themselves applies the same rounding rule as n_ion_pairs does.
        try:
            units = mixture.unit_counts(composition, n)
        except design.DesignError as exc:
            raise ConfigError(f"{where} gives {n} formula units: {exc}") from None
        ions = sum(units[u] * int(row.sum())
                   for u, row in zip(mixture.units, mixture.stoichiometry, strict=True))
        if ions != self.n_ions:
            raise ConfigError(f"{where} gives {self.n_ions / ions_per_unit:g} formula units, "
                              "not a whole number")
        return n


def _fraction_or_raw(value: Any, unit: str) -> Any:
    """A "p/q" string as a float; anything else unchanged (checked against the mixture)."""
    return design.fraction_value(value, unit) if isinstance(value, str) else value


class SamplingConfig(_Strict):
    """The classical sampling protocol (paper: NVT at 300 K, snapshots every 20 ps)."""

    temperature_K: float = Field(300.0, gt=0, le=5000)
    pressure_bar: float = Field(1.0, gt=-1e4, le=1e6,
                                description="barostat pressure (equilibration, NPT production)")
    timestep_fs: float = Field(1.0, gt=0, le=4.0)
    hydrogen_mass_amu: float | None = Field(
        None, gt=1.0, le=4.5, description="hydrogen mass repartitioning: every H gets this "
        "mass, taken from its bonded heavy atom (3.024 lets a 2 fs step run without "
        "constraints; the frames' distribution is unchanged). None: physical masses")
    minimise: bool = True
    equilibration_ps: float = Field(100.0, ge=0, description="NPT equilibration: the "
                                    "minimum; it goes on until the density has plateaued")
    max_equilibration_ps: float | None = Field(
        None, ge=0, description="NPT equilibration stops here even without a plateau (a "
        "warning is recorded); default 5 × equilibration_ps")
    production_ps: float = Field(400.0, gt=0)
    snapshot_interval_ps: float = Field(20.0, gt=0)
    production_ensemble: Literal["nvt", "npt"] = "nvt"
    thermostat_time_ps: float = Field(0.1, gt=0, description="Nosé–Hoover / friction time "
                                      "(paper: 100 δt)")
    barostat_interval_steps: int = Field(25, gt=0, description="Monte Carlo barostat moves")
    replicas: int = Field(2, ge=1, description="independent boxes per composition; "
                          "replica 0 trains/validates, replica 1 tests")
    seed: int = Field(0, ge=0)
    initial_density_g_cm3: float = Field(1.0, gt=0.1, le=5.0,
                                         description="Packmol target (below the liquid's)")
    cutoff_A: float | None = Field(None, gt=0, description="LJ/real-space cutoff; default: "
                                   "min(12 Å, 0.49 × the smallest box edge at "
                                   "max_density_g_cm3)")
    max_density_g_cm3: float = Field(2.6, gt=0.5, le=10.0, description="densest box the "
                                     "default cutoff must fit (salt-rich boxes densify)")
    platform: Literal["auto", "CPU", "CUDA", "OpenCL", "Reference"] = "auto"

    @field_validator("snapshot_interval_ps")
    @classmethod
    def _interval_le_production(cls, v: float, info: Any) -> float:
        prod = info.data.get("production_ps")
        if prod is not None and v > prod:
            raise ValueError(f"snapshot_interval_ps ({v}) exceeds production_ps ({prod})")
        return v

    @field_validator("max_equilibration_ps")
    @classmethod
    def _max_ge_min(cls, v: float | None, info: Any) -> float | None:
        low = info.data.get("equilibration_ps")
        if v is not None and low is not None and v < low:
            raise ValueError(f"max_equilibration_ps ({v}) is below equilibration_ps ({low})")
        return v

    @property
    def equilibration_limit_ps(self) -> float:
        """Longest NPT equilibration: `max_equilibration_ps`, default 5 × the minimum."""
        if self.max_equilibration_ps is not None:
            return self.max_equilibration_ps
        return 5.0 * self.equilibration_ps

    @property
    def n_snapshots(self) -> int:
        """Snapshots per run: one every `snapshot_interval_ps` of production."""
        return int(round(self.production_ps / self.snapshot_interval_ps + 1e-9))


#: The ``[teacher]`` table's default: the classical force field of the ion library.
DEFAULT_TEACHER: dict[str, Any] = {"kind": "classical"}


class StudyTables(_Strict):
    """What every study-like config shares: ``[mixture]``, ``[sampling]`` (the classical
    sampler's protocol), ``[teacher]`` and ``[cluster]`` (where Dask tasks run)."""

    mixture: MixtureConfig
    sampling: SamplingConfig = SamplingConfig()
    teacher: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_TEACHER))
    cluster: ClusterConfig = ClusterConfig()

    @property
    def classical_teacher(self) -> bool:
        """True when [teacher] is the classical force field (which also runs the MD)."""
        return self.teacher.get("kind", "classical") == "classical"

    def sample_config(self) -> SampleConfig:
        """The sampling part: the classical force field runs the MD (with [teacher]'s
        parameters when that teacher is the classical one)."""
        return SampleConfig(mixture=self.mixture, sampling=self.sampling,
                            teacher=self.teacher if self.classical_teacher
                            else DEFAULT_TEACHER)


class SampleConfig(_Strict):
    """A sampling config file: the mixture, the protocol and the teacher (``[teacher]``:
    ``kind`` plus that kind's parameters; see `ionmix.teachers`)."""

    mixture: MixtureConfig
    sampling: SamplingConfig = SamplingConfig()
    teacher: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_TEACHER))


def _format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif not isinstance(err.get("input"), dict | list):
            msg += f" (got {err.get('input')!r})"  # the value at fault, as read from the file
        parts.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(parts)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; errors name the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def parse_model(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    """Validate `data` as `model`; errors name `source` and every offending key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


#: Tables that make a config another command's: table → the command that reads it.
_OTHER_COMMANDS = {"study": "ionmix transfer", "learn": "ionmix learn"}


def check_config_kind(path: str | Path, data: dict[str, Any], command: str) -> None:
    """ConfigError when `data` (read from `path`) is another command's config, named by a
    table only that command reads (a study config given to `ionmix build`)."""
    for table, owner in _OTHER_COMMANDS.items():
        if table in data and owner != command:
            raise ConfigError(f"{path} has a [{table}] table: it is a config for `{owner}`, "
                              f"not `{command}` (remove [{table}] to use it here)")


def load_sample_config(path: str | Path, command: str = "ionmix sample") -> SampleConfig:
    """Read and validate a sampling config TOML (`command`: who reads it, for messages)."""
    data = read_toml(path)
    check_config_kind(path, data, command)
    return parse_model(SampleConfig, data, str(path))

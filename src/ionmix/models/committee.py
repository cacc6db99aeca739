"""A committee of models as one ASE calculator: the mean prediction and its spread.

The committee's spread is the active-learning signal (dpgen's "model deviation"): for each
atom, the force deviation is sqrt(mean_k |F_k − F̄|²) over the K models; a frame's
``max_force_deviation_eV_per_A`` is its largest atomic value. Energies and stresses are
averaged too, with their standard deviations.

An optional guard stops exploration (raises `ExplorationStop`) when a frame's maximum force
deviation exceeds the upper trust level, or its density leaves a window: the MD engine's
files up to the last written frame are kept, as for a blow-up.

By default the dynamics follows the committee's mean and every member is evaluated at every
step. With ``drive_member`` the dynamics follows that one member, and the whole committee
is evaluated only every ``deviation_every`` calls (dpgen's way with LAMMPS: the first
graph drives, the model deviation is computed every ``model_devi_freq`` steps): K − 1
fewer network evaluations on the other calls, and a walker per member explores where
*that* member goes — where its own NPT run would break.

The members are networks that share one baseline (`ionmix.models.baseline`); it is added to
the mean once per evaluation (it does not change the spread). Build committees with
`ionmix.models.load_committee`, which checks that the members share it.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ionmix.errors import RunError
from ionmix.units import density_g_per_cm3


class ExplorationStop(RunError):
    """A walker left the region the committee can be trusted with (a reason, not a bug)."""


class CommitteeCalculator(Calculator):
    """Mean of K ASE calculators, with their spread.

    Args:
        members: K ≥ 2 calculators (trained networks) giving energy, forces and stress.
        baseline: the calculator of the members' shared baseline (None: none), added to
            the mean.
        stop_above_eV_per_A: raise `ExplorationStop` when the max force deviation exceeds
            it (None: never).
        density_window_g_cm3: (low, high): raise `ExplorationStop` outside it (None: never).
        record_above_eV_per_A: keep a copy of every evaluated structure whose max force
            deviation reaches it (in `recorded`, the latest `max_recorded`), so a walker
            saves the frames between its trajectory snapshots where the committee starts
            to disagree, up to the one that stopped it (None: keep none).
        drive_member: index of the member whose energy, forces and stress the results
            are (plus the baseline); None: the members' mean.
        deviation_every: with `drive_member`, evaluate the whole committee (deviation,
            guard, recording) on every n-th call only, the first included; the calls
            between carry no deviation keys. Must be 1 without `drive_member`.

    Results: ``energy`` (eV), ``forces`` (eV/Å, (n_atoms, 3)), ``stress`` (eV/Å³, Voigt),
    ``energy_std_eV``, ``force_deviation_eV_per_A`` ((n_atoms,)),
    ``max_force_deviation_eV_per_A``, ``stress_std_eV_per_A3`` ((6,)).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, members: Sequence, baseline=None,
                 stop_above_eV_per_A: float | None = None,
                 density_window_g_cm3: tuple[float, float] | None = None,
                 record_above_eV_per_A: float | None = None, max_recorded: int = 200,
                 drive_member: int | None = None, deviation_every: int = 1):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 models, got {len(members)}")
        if drive_member is not None and not 0 <= drive_member < len(members):
            raise ValueError(f"drive_member {drive_member} is not one of the {len(members)} "
                             "members")
        if deviation_every < 1 or (drive_member is None and deviation_every != 1):
            raise ValueError("deviation_every must be ≥ 1, and 1 unless a member drives")
        self.drive_member = drive_member
        self.deviation_every = deviation_every
        self.n_calls = 0
        self.members = list(members)
        self.baseline = baseline
        self.stop_above = stop_above_eV_per_A
        self.density_window = density_window_g_cm3
        self.record_above = record_above_eV_per_A
        self.recorded: collections.deque = collections.deque(maxlen=max_recorded)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        # stress whenever the cell is periodic: MD asks for forces and stress in separate
        # calls, and one committee pass for both costs less than two
        want_stress = all(self.atoms.pbc)
        whole = self.drive_member is None or self.n_calls % self.deviation_every == 0
        self.n_calls += 1
        members = self.members if whole else [self.members[self.drive_member]]
        energies, forces, stresses = [], [], []
        for member in members:
            work = self.atoms.copy()
            work.calc = member
            energies.append(work.get_potential_energy())
            forces.append(work.get_forces())
            if want_stress:
                stresses.append(work.get_stress())
        energies, forces = np.array(energies), np.array(forces)
        stresses = np.array(stresses) if want_stress else None
        if whole:
            self.results.update(_statistics(energies, forces, stresses))
        if self.drive_member is not None:  # the dynamics is the driving member's
            k = self.drive_member if whole else 0
            self.results.update(energy=float(energies[k]), free_energy=float(energies[k]),
                                forces=forces[k])
            if want_stress:
                self.results["stress"] = stresses[k]
        if self.baseline is not None:
            self._add_baseline(want_stress)
        if whole:
            self._guard()

    def _add_baseline(self, want_stress: bool) -> None:
        work = self.atoms.copy()
        work.calc = self.baseline
        energy = work.get_potential_energy()
        self.results["energy"] += energy
        self.results["free_energy"] += energy
        self.results["forces"] = self.results["forces"] + work.get_forces()
        if want_stress:
            self.results["stress"] = self.results["stress"] + work.get_stress()

    def _guard(self) -> None:
        dev = self.results["max_force_deviation_eV_per_A"]
        if self.record_above is not None and dev >= self.record_above:
            frame = self.atoms.copy()
            frame.calc = None
            frame.info["max_force_deviation_eV_per_A"] = dev
            self.recorded.append(frame)
        if self.stop_above is not None and dev > self.stop_above:
            raise ExplorationStop(f"max force deviation {dev:.3f} eV/Å above the upper trust "
                                  f"level {self.stop_above:g} eV/Å")
        if self.density_window is not None and all(self.atoms.pbc):
            rho = density_g_per_cm3(float(self.atoms.get_masses().sum()),
                                    self.atoms.get_volume())
            low, high = self.density_window
            if not low <= rho <= high:
                raise ExplorationStop(f"density {rho:.3f} g/cm³ left the window "
                                      f"[{low:.3f}, {high:.3f}]")


def _statistics(energies: np.ndarray, forces: np.ndarray, stresses: np.ndarray | None) -> dict:
    """Committee mean and spread from per-model energies (K,), forces (K, n, 3) and
    stresses (K, 6)."""
    mean_f = forces.mean(axis=0)
    dev = np.sqrt(((forces - mean_f) ** 2).sum(axis=2).mean(axis=0))
    out = {"energy": float(energies.mean()), "free_energy": float(energies.mean()),
           "forces": mean_f, "energy_std_eV": float(energies.std()),
           "force_deviation_eV_per_A": dev, "max_force_deviation_eV_per_A": float(dev.max())}
    if stresses is not None:
        out["stress"] = stresses.mean(axis=0)
        out["stress_std_eV_per_A3"] = stresses.std(axis=0)
    return out

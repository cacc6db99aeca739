"""ionmix: machine-learned interatomic potentials for ionic liquids and their mixtures."""

__version__ = "0.1.0"

"""lasp2_hpc: on-the-fly training of committees of neural network potentials on HPC clusters."""

__version__ = "0.1.0"

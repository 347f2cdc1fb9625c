"""AiiDA plugin that distils a MACE foundation potential and a few DFT calculations into an ACE potential."""

__version__ = "0.1.0"

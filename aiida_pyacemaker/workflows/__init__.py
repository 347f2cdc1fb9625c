"""Work chains of aiida-pyacemaker."""

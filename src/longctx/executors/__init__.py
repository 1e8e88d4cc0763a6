"""Where and how a plan's cells are measured: here (one or N at a time) or on Slurm, through one shared result store."""

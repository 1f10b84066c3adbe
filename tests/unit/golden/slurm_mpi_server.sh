#!/bin/bash
# Melissa job server: `sbatch --parsable` this file with the job's environment
# (sbatch passes it on); the launcher does it for you.
#SBATCH --job-name=server
#SBATCH --output="/s/out dir/logs/server%%.log"
#SBATCH --open-mode=append
#SBATCH --chdir=/s
#SBATCH --ntasks=4
#SBATCH --nodes=2
exec srun --mpi=pmi2 /venv/bin/python -m melissa.server /s/out

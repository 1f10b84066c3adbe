#!/bin/bash
# Melissa job simulation_000003: `sbatch --parsable` this file with the job's environment
# (sbatch passes it on); the launcher does it for you.
#SBATCH --job-name=simulation_000003
#SBATCH --output=/home/me/study/out/logs/simulation_000003.log
#SBATCH --open-mode=append
#SBATCH --chdir=/home/me/study
#SBATCH --ntasks=1
#SBATCH --time=0:10:00
#SBATCH --partition=short
#SBATCH "--comment=a study"
exec python3 sim.py 0.25 'it'"'"'s 1%'

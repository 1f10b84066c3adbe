#!/bin/bash
# Melissa job server, submitted by the launcher with
# oarsub -l nodes=2,walltime=1:00:00 -S <this file>
#OAR -n server
#OAR -O /home/me/out/logs/simulation_000003.log
#OAR -E /home/me/out/logs/simulation_000003.log
export MELISSA_STUDY_TOKEN=cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
cd '/home/me/my study' || exit 1
exec mpirun -np 4 -mca plm_rsh_agent oarsh -machinefile "$OAR_NODE_FILE" python3 sim.py 0.25 'it'"'"'s'

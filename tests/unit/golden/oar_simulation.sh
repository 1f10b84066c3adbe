#!/bin/bash
# Melissa job simulation_000003, submitted by the launcher with
# oarsub -q besteffort -S <this file>
#OAR -n simulation_000003
#OAR -O /home/me/out/logs/simulation_000003.log
#OAR -E /home/me/out/logs/simulation_000003.log
#OAR -l /core=1
export MELISSA_STUDY_TOKEN=abababababababababababababababab
export PATH=/venv/bin:/usr/bin
export QUOTE='a '"'"'b'"'"' $c'
cd '/home/me/my study' || exit 1
exec python3 sim.py 0.25 'it'"'"'s'

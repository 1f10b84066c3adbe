"""A Python heat solver instrumented with Melissa's Python API (see README.md)."""

import sys

import numpy as np
from mpi4py import MPI

import melissa_api

NX, NY, STEPS, ALPHA = 20, 16, 5, 0.1

param = [float(a) for a in sys.argv[1:6]] + [0.0] * (6 - len(sys.argv))
appnum = MPI.COMM_WORLD.Get_attr(MPI.APPNUM) or 0
comm = MPI.COMM_WORLD.Split(appnum, MPI.COMM_WORLD.Get_rank())
me, np_ = comm.Get_rank(), comm.Get_size()
n = NX * NY
first = me * (n // np_) + min(me, n % np_)
vect_size = n // np_ + (1 if me < n % np_ else 0)

u = np.full((NY, NX), param[0])
field_name = "heat1"
melissa_api.melissa_init(field_name, vect_size, comm)
for _ in range(STEPS):
    padded = np.pad(u, 1)
    padded[:, 0], padded[:, -1], padded[0, :], padded[-1, :] = param[1:5]
    u = u + ALPHA * (padded[1:-1, :-2] + padded[1:-1, 2:] + padded[:-2, 1:-1] + padded[2:, 1:-1]
                     - 4.0 * u)
    melissa_api.melissa_send(field_name, u.reshape(-1)[first:first + vect_size])
melissa_api.melissa_finalize()

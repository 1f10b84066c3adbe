! A heat solver instrumented with Melissa's API (see README.md), built four ways: -DMPIF_H
! (include 'mpif.h'), -DUSE_MPI (use mpi), -DUSE_MPI_F08 (use mpi_f08), -DNO_MPI (sequential,
! melissa_init_no_mpi and melissa_send_no_mpi); -DINCLUDE_2021: the include file under the name
! Melissa gave it in 2021, melissa/api.f90.
program heat
#if defined(USE_MPI)
  use mpi
#elif defined(USE_MPI_F08)
  use mpi_f08
#endif
  use iso_c_binding, only: C_CHAR
  implicit none
#if defined(MPIF_H)
  include 'mpif.h'
#endif
#if defined(INCLUDE_2021)
  include "melissa/api.f90"
#else
  include "melissa_api.f90"
#endif

  integer, parameter :: nx = 20, ny = 16, steps = 5
  real(8), parameter :: alpha = 0.1d0
  real(8) :: u(nx, ny), next(nx, ny), param(5), c, left, right, top, bottom
  integer :: i, j, k, s, me, np, n, first, vect_size, statinfo, narg
  character(len=32) :: arg
  character(len=5) :: name = C_CHAR_"heat1"
  logical :: flag
#if defined(USE_MPI_F08)
  type(MPI_Comm) :: comm
#else
  integer :: comm
#endif
#if !defined(NO_MPI)
  integer(kind=MPI_ADDRESS_KIND) :: appnum

  call mpi_init(statinfo)
#endif
  narg = command_argument_count()
  if (narg < 1) then
    print *, "Missing parameter"
    stop 1
  end if
  param(:) = 0
  do k = 1, min(narg, 5)
    call get_command_argument(k, arg)
    read (arg, *) param(k)
  end do

#if defined(NO_MPI)
  me = 0
  np = 1
#else
  call mpi_comm_rank(MPI_COMM_WORLD, me, statinfo)
  call mpi_comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, appnum, flag, statinfo)
  if (.not. flag) appnum = 0
  call mpi_comm_split(MPI_COMM_WORLD, int(appnum), me, comm, statinfo)
  call mpi_comm_rank(comm, me, statinfo)
  call mpi_comm_size(comm, np, statinfo)
#endif

  n = nx * ny
  first = me * (n / np) + min(me, mod(n, np))
  vect_size = n / np
  if (me < mod(n, np)) vect_size = vect_size + 1
  u(:, :) = param(1)

#if defined(USE_MPI_F08)
  call melissa_init(name, vect_size, comm%MPI_VAL)
#elif defined(NO_MPI)
  call melissa_init_no_mpi(name, vect_size)
#else
  call melissa_init(name, vect_size, comm)
#endif
  do s = 1, steps
    do j = 1, ny
      do i = 1, nx
        c = u(i, j)
        left = param(2); right = param(3); top = param(4); bottom = param(5)
        if (i > 1) left = u(i - 1, j)
        if (i < nx) right = u(i + 1, j)
        if (j > 1) top = u(i, j - 1)
        if (j < ny) bottom = u(i, j + 1)
        next(i, j) = c + alpha * (left + right + top + bottom - 4.0d0 * c)
      end do
    end do
    u = next
#if defined(NO_MPI)
    call melissa_send_no_mpi(name, send_slice(u, first, vect_size))
#else
    call melissa_send(name, send_slice(u, first, vect_size))
#endif
  end do
  call melissa_finalize()
#if !defined(NO_MPI)
  call mpi_comm_free(comm, statinfo)
  call mpi_finalize(statinfo)
#endif

contains

  ! This rank's cells, in C order (x fastest): Fortran's u(x, y) is already laid out so.
  function send_slice(field, start, count) result(slice)
    real(8), intent(in) :: field(nx * ny)
    integer, intent(in) :: start, count
    real(8) :: slice(count)
    slice = field(start + 1:start + count)
  end function send_slice
end program heat

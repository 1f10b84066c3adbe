! Fortran client for tests/integration/test_compiled_clients.py: module melissa with `use mpi`
! (integer communicator). The scenario is the first argument; each call prints "<call> <ierr>".
! Values sent at the k-th send (k from 0) for global cell g: g + 1000 k + 1e6 sim, as client_ops.c.
!
!   arrays   a sequential client of field f (10 cells, 3 steps): 2-D array, wrong size, a
!            section that is not contiguous, real(c_float), too many sends, finalize twice,
!            a blank-padded field name, melissa_last_error
!   noierr   melissa_send before melissa_init without ierr: the program must stop (status 3)
!   noenv    melissa_init_no_mpi without MELISSA_* in the environment (ierr = 1)
!   mpi      every rank of MPI_COMM_WORLD holds a slice of f: melissa_init with a communicator
program fortran_ops
   use, intrinsic :: iso_c_binding, only: c_double, c_float
   use mpi
   use melissa
   implicit none
   integer, parameter :: CELLS = 10, STEPS = 3
   character(len=32) :: scenario, text
   character(len=16) :: padded = 'f'
   character(len=200) :: message
   real(c_double) :: a2(5, 2), wrong(CELLS + 1), strided(2 * CELLS), v(CELLS)
   real(c_float) :: single(CELLS)
   real(c_double) :: sim
   integer :: ierr, i, rank, ranks, lo, hi, step, mpierr

   call MPI_Init(mpierr)
   call MPI_Comm_rank(MPI_COMM_WORLD, rank, mpierr)
   call MPI_Comm_size(MPI_COMM_WORLD, ranks, mpierr)
   call get_command_argument(1, scenario)
   call get_environment_variable('MELISSA_SIMULATION_ID', text)
   sim = 0
   if (len_trim(text) > 0) read (text, *) sim
   do i = 1, CELLS
      v(i) = real(i - 1, c_double) + 1.0d6 * sim
   end do

   select case (trim(scenario))
   case ('arrays')
      call melissa_init_no_mpi('f', CELLS, ierr, shape=[5, 2])   ! Fortran order: a2(5, 2)
      call report('init', ierr)
      a2 = reshape(v, [5, 2])
      call melissa_send('f', a2, ierr)
      call report('send_2d', ierr)
      wrong = 0
      call melissa_send('f', wrong, ierr)
      call report('send_wrong_size', ierr)
      strided = -1
      strided(1:2 * CELLS:2) = v + 1000
      call melissa_send(padded, strided(1:2 * CELLS:2), ierr)
      call report('send_strided', ierr)
      single = real(v + 2000, c_float)
      call melissa_send('f', single, ierr)
      call report('send_float', ierr)
      call melissa_send('f', v, ierr)
      call report('send_too_many', ierr)
      call melissa_finalize(ierr)
      call report('finalize', ierr)
      call melissa_finalize(ierr)
      call report('finalize_again', ierr)
      call melissa_last_error(message)
      print '(a)', 'last_error ' // trim(message)
   case ('noierr')
      call melissa_send('f', v)
      print '(a)', 'not reached'
   case ('noenv')
      call melissa_init_no_mpi('f', CELLS, ierr)
      call report('init', ierr)
   case ('mpi')
      lo = rank * CELLS / ranks
      hi = (rank + 1) * CELLS / ranks
      call melissa_init('f', hi - lo, MPI_COMM_WORLD, ierr)
      call report('init', ierr)
      do step = 0, STEPS - 1
         call melissa_send('f', v(lo + 1:hi) + 1000 * step, ierr)
         call report('send', ierr)
      end do
      call melissa_finalize(ierr)
      call report('finalize', ierr)
   end select
   call MPI_Finalize(mpierr)

contains

   subroutine report(what, code)
      character(len=*), intent(in) :: what
      integer, intent(in) :: code
      print '(a, 1x, i0)', what, code
   end subroutine
end program fortran_ops

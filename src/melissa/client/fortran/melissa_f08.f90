! module melissa_f08: module melissa, plus melissa_init for a type(MPI_Comm) communicator.
!
!     use mpi_f08
!     use melissa_f08
!     call melissa_init('temperature', local_size, MPI_COMM_WORLD)
!
! type(MPI_Comm) is a bind(c) type whose only component is the integer handle, so it is passed
! to the same C function as the integer communicator of `use mpi`. Compiled with the mpif90 of
! the MPI the program uses (its mpi_f08.mod).
module melissa_f08
   use, intrinsic :: iso_c_binding, only: c_char, c_int
   use mpi_f08, only: MPI_Comm
   use melissa
   implicit none

   interface melissa_init
      subroutine melissa_init_f08_comm(field, local_size, comm, ierr, shape) &
         bind(c, name="melissa_f_init")
         import :: c_char, c_int, MPI_Comm
         character(kind=c_char, len=*), intent(in) :: field
         integer(c_int), intent(in) :: local_size
         type(MPI_Comm), intent(in) :: comm
         integer(c_int), intent(out), optional :: ierr
         integer(c_int), intent(in), optional :: shape(:)
      end subroutine
   end interface
end module melissa_f08

! melissa_api.f90: Melissa's Fortran client API, for `include "melissa_api.f90"` in the
! specification part of a program or procedure (as Melissa's examples do), unchanged; it needs
! nothing in scope (each interface uses iso_c_binding itself):
!
!     include "melissa_api.f90"
!     call melissa_init(name, vect_size, comm)       ! comm: an integer handle (mpif.h, use mpi;
!                                                    ! with use mpi_f08 pass comm%MPI_VAL)
!     call melissa_init_no_mpi(name, vect_size)      ! a sequential simulation
!     call melissa_send(name, u)                     ! or melissa_send_no_mpi; real(8) values
!     call melissa_finalize()
!
! The names need no C_NULL_CHAR: they are matched against the study's field names, which the
! launcher gives the simulation (MELISSA_FIELD_NAMES). On an error the routines print the reason
! on stderr and end the program with a non-zero exit status. Link: pkg-config melissa-api-mpi
! (melissa-api without MPI). Only interfaces: they bind to the C functions of libmelissa_api.

interface
   subroutine melissa_init(field_name, local_vect_size, comm) bind(c, name="melissa_init_f")
      use, intrinsic :: iso_c_binding, only: c_char, c_int
      character(kind=c_char), dimension(*), intent(in) :: field_name
      integer(kind=c_int), intent(in) :: local_vect_size
      integer(kind=c_int), intent(in) :: comm
   end subroutine melissa_init

   subroutine melissa_init_no_mpi(field_name, vect_size) bind(c, name="melissa_init_no_mpi_f")
      use, intrinsic :: iso_c_binding, only: c_char, c_int
      character(kind=c_char), dimension(*), intent(in) :: field_name
      integer(kind=c_int), intent(in) :: vect_size
   end subroutine melissa_init_no_mpi

   subroutine melissa_send(field_name, send_vect) bind(c, name="melissa_send")
      use, intrinsic :: iso_c_binding, only: c_char, c_double
      character(kind=c_char), dimension(*), intent(in) :: field_name
      real(kind=c_double), dimension(*), intent(in) :: send_vect
   end subroutine melissa_send

   subroutine melissa_send_no_mpi(field_name, send_vect) bind(c, name="melissa_send_no_mpi")
      use, intrinsic :: iso_c_binding, only: c_char, c_double
      character(kind=c_char), dimension(*), intent(in) :: field_name
      real(kind=c_double), dimension(*), intent(in) :: send_vect
   end subroutine melissa_send_no_mpi

   subroutine melissa_finalize() bind(c, name="melissa_finalize")
   end subroutine melissa_finalize
end interface

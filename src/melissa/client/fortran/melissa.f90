! module melissa: the Melissa client API for Fortran.
!
!     use mpi                     ! or use mpi_f08 together with module melissa_f08
!     use melissa
!     call melissa_init('temperature', local_size, MPI_COMM_WORLD)   ! or melissa_init_no_mpi
!     do step = 1, nb_time_steps
!        call advance(t)
!        call melissa_send('temperature', t)   ! any rank, real(c_double) or real(c_float)
!     end do
!     call melissa_finalize()
!
! Strings are plain Fortran strings (trailing blanks are ignored). Every routine takes an
! optional last argument `ierr` (integer): with it, the routine returns MELISSA_OK (0) or an
! error code below and the program goes on; without it, an error stops the program with that
! code as exit status. Either way the reason is printed on stderr ("melissa: error: ...").
!
! The module holds only interfaces to libmelissa (Fortran 2018 C descriptors, no runtime of
! its own). Link: -lmelissa, plus -lmelissa_mpi when calling melissa_init with a communicator
! (pkg-config melissa-fortran-mpi). Details: docs/c-fortran.md.
module melissa
   use, intrinsic :: iso_c_binding, only: c_char, c_double, c_float, c_int
   implicit none
   private

   public :: melissa_init, melissa_init_no_mpi, melissa_send, melissa_finalize
   public :: melissa_last_error

   ! Error codes: the same values as enum melissa_error in melissa.h.
   integer, parameter, public :: MELISSA_OK = 0
   integer, parameter, public :: MELISSA_ERR_ENV = 1       ! MELISSA_* environment missing/invalid
   integer, parameter, public :: MELISSA_ERR_ARG = 2       ! invalid argument
   integer, parameter, public :: MELISSA_ERR_ORDER = 3     ! call out of order
   integer, parameter, public :: MELISSA_ERR_SIZE = 4      ! array size/type /= declared field
   integer, parameter, public :: MELISSA_ERR_STEPS = 5     ! too many sends / finalize too early
   integer, parameter, public :: MELISSA_ERR_TIMEOUT = 6   ! no answer within MELISSA_TIMEOUT
   integer, parameter, public :: MELISSA_ERR_REFUSED = 7   ! the server refused a message
   integer, parameter, public :: MELISSA_ERR_PROTOCOL = 8  ! garbled answer from the server
   integer, parameter, public :: MELISSA_ERR_SYSTEM = 9    ! ZeroMQ or system failure
   integer, parameter, public :: MELISSA_ERR_MPI = 10      ! an MPI call failed

   ! melissa_init(field, local_size, comm [, ierr] [, shape]): an MPI simulation; this rank holds
   ! local_size values, which follow those of the lower ranks of comm (collective over comm).
   ! comm is an integer handle (use mpi); module melissa_f08 adds type(MPI_Comm) (use mpi_f08).
   ! shape: the global field's shape in Fortran order, e.g. [nx, ny] for t(nx, ny).
   interface melissa_init
      subroutine melissa_init_integer_comm(field, local_size, comm, ierr, shape) &
         bind(c, name="melissa_f_init")
         import :: c_char, c_int
         character(kind=c_char, len=*), intent(in) :: field
         integer(c_int), intent(in) :: local_size
         integer(c_int), intent(in) :: comm
         integer(c_int), intent(out), optional :: ierr
         integer(c_int), intent(in), optional :: shape(:)
      end subroutine
   end interface

   ! melissa_init_no_mpi(field, size [, ierr] [, shape]): a sequential simulation.
   interface melissa_init_no_mpi
      subroutine melissa_init_no_mpi_c(field, size, ierr, shape) &
         bind(c, name="melissa_f_init_no_mpi")
         import :: c_char, c_int
         character(kind=c_char, len=*), intent(in) :: field
         integer(c_int), intent(in) :: size
         integer(c_int), intent(out), optional :: ierr
         integer(c_int), intent(in), optional :: shape(:)
      end subroutine
   end interface

   ! melissa_send(field, data [, ierr]): the next time step; data of any rank, its size equal
   ! to local_size (checked). Sections that are not contiguous are copied first.
   interface melissa_send
      subroutine melissa_send_double(field, data, ierr) bind(c, name="melissa_f_send")
         import :: c_char, c_int, c_double
         character(kind=c_char, len=*), intent(in) :: field
         real(c_double), intent(in) :: data(..)
         integer(c_int), intent(out), optional :: ierr
      end subroutine
      subroutine melissa_send_float(field, data, ierr) bind(c, name="melissa_f_send")
         import :: c_char, c_int, c_float
         character(kind=c_char, len=*), intent(in) :: field
         real(c_float), intent(in) :: data(..)
         integer(c_int), intent(out), optional :: ierr
      end subroutine
   end interface

   ! melissa_finalize([ierr]): after the last send of every field.
   interface melissa_finalize
      subroutine melissa_finalize_c(ierr) bind(c, name="melissa_f_finalize")
         import :: c_int
         integer(c_int), intent(out), optional :: ierr
      end subroutine
   end interface

   ! melissa_last_error(message): the text of the last error, blank-padded or truncated.
   interface melissa_last_error
      subroutine melissa_last_error_c(message) bind(c, name="melissa_f_last_error")
         import :: c_char
         character(kind=c_char, len=*), intent(out) :: message
      end subroutine
   end interface
end module melissa

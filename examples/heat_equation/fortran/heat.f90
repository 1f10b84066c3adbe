! The 2-D heat equation of ../heat.py in Fortran, as an MPI-parallel Melissa client.
!
!     dT/dt = alpha * (d2T/dx2 + d2T/dy2)   on [0, 1] x [0, 1],   Dirichlet walls,
!
! Same scheme and the same floating-point operations in the same order as heat.py (explicit
! 5-point stencil on a node-centred grid whose outer rows and columns are the walls, corners at
! the mean of their two walls, sub-iterations so that every simulation outputs at
! t = (k + 1) T_END / steps), so its fields equal the Python ones to rounding.
!
! Layout: t(i, k) is the point x = (i - 1) / (nx - 1) of this rank's k-th row, so a row is
! contiguous, and t(:, 1:rows) is the row-major (y, x) field of heat.py. The ny rows are split
! over the MPI ranks as Melissa splits cells over server ranks; rows 0 and rows + 1 are ghost
! rows exchanged every iteration.
!
! Usage (the launcher appends the parameter values, in the order of config.json's parameters):
!     heat INITIAL LEFT RIGHT TOP BOTTOM DIFFUSIVITY [--nx N] [--ny N] [--steps N] [--no-send]
program heat
   use, intrinsic :: iso_fortran_env, only: dp => real64, error_unit
   use mpi_f08
   use melissa_f08
   implicit none

   real(dp), parameter :: T_END = 0.1_dp   ! physical end time of every simulation
   real(dp), parameter :: SAFETY = 0.8_dp  ! fraction of the explicit stability limit
   character(len=*), parameter :: FIELD = 'temperature'

   real(dp) :: values(6), diffusivity, dx, dy, dt_max, dt, rx, ry, d2x, d2y
   real(dp), allocatable, target :: a(:, :), b(:, :)
   real(dp), pointer :: current(:, :), following(:, :), swap(:, :)
   integer :: nx = 100, ny = 100, steps = 100, rank, ranks, j0, rows, base, extra
   integer :: k_lo, k_hi, i, k, j, step, up, down
   integer(kind=8) :: n_sub, it
   logical :: send = .true.

   call MPI_Init()
   call MPI_Comm_rank(MPI_COMM_WORLD, rank)
   call MPI_Comm_size(MPI_COMM_WORLD, ranks)
   call parse_args()

   ! This rank's rows j0 .. j0 + rows - 1 (0-based global rows, as in heat.py).
   base = ny / ranks
   extra = mod(ny, ranks)
   j0 = rank * base + min(rank, extra)
   rows = base + merge(1, 0, rank < extra)

   allocate(a(nx, 0:rows + 1), b(nx, 0:rows + 1))
   a = 0.0_dp
   do k = 0, rows + 1
      j = j0 + k - 1
      if (j < 0 .or. j >= ny) cycle
      do i = 1, nx
         a(i, k) = initial_value(j, i - 1)
      end do
   end do
   b = a
   current => a
   following => b

   diffusivity = values(6)
   dx = 1.0_dp / real(nx - 1, dp)
   dy = 1.0_dp / real(ny - 1, dp)
   dt_max = SAFETY / (diffusivity * (2.0_dp / (dx * dx) + 2.0_dp / (dy * dy)))
   n_sub = max(1_8, ceiling((T_END / real(steps, dp)) / dt_max, kind=8))
   dt = (T_END / real(steps, dp)) / real(n_sub, dp)
   rx = (diffusivity * dt) * real(int(nx - 1, 8)**2, dp)   ! alpha dt / dx^2
   ry = (diffusivity * dt) * real(int(ny - 1, 8)**2, dp)   ! alpha dt / dy^2
   ! Interior rows of this rank (walls are never updated), as local row indices.
   k_lo = merge(2, 1, j0 == 0)
   k_hi = merge(rows - 1, rows, j0 + rows == ny)
   up = merge(rank + 1, MPI_PROC_NULL, rank + 1 < ranks)
   down = merge(rank - 1, MPI_PROC_NULL, rank > 0)

   ! shape in Fortran order, as shape(t) would give for the whole field t(nx, ny)
   if (send) call melissa_init(FIELD, nx * rows, MPI_COMM_WORLD, shape=[nx, ny])
   do step = 1, steps
      do it = 1, n_sub
         call MPI_Sendrecv(current(:, rows), nx, MPI_DOUBLE_PRECISION, up, 0, &
                           current(:, 0), nx, MPI_DOUBLE_PRECISION, down, 0, &
                           MPI_COMM_WORLD, MPI_STATUS_IGNORE)
         call MPI_Sendrecv(current(:, 1), nx, MPI_DOUBLE_PRECISION, down, 1, &
                           current(:, rows + 1), nx, MPI_DOUBLE_PRECISION, up, 1, &
                           MPI_COMM_WORLD, MPI_STATUS_IGNORE)
         do k = k_lo, k_hi
            do i = 2, nx - 1
               ! (west + east) and (south + north) first, as heat.py; parentheses keep the
               ! order of the additions
               d2x = (current(i - 1, k) + current(i + 1, k)) - 2.0_dp * current(i, k)
               d2y = (current(i, k - 1) + current(i, k + 1)) - 2.0_dp * current(i, k)
               following(i, k) = (current(i, k) + rx * d2x) + ry * d2y
            end do
         end do
         swap => current
         current => following
         following => swap
      end do
      ! Without ierr, a Melissa error stops the program with its code (message on stderr).
      if (send) call melissa_send(FIELD, current(:, 1:rows))
   end do
   if (send) call melissa_finalize()
   call MPI_Finalize()

contains

   ! heat.py's initial_field at 0-based global point (j, i).
   real(dp) function initial_value(j, i)
      integer, intent(in) :: j, i
      logical :: first_col, last_col
      first_col = i == 0
      last_col = i == nx - 1
      if (j == 0) then
         initial_value = values(5)
         if (first_col) initial_value = 0.5_dp * (values(5) + values(2))
         if (last_col) initial_value = 0.5_dp * (values(5) + values(3))
      else if (j == ny - 1) then
         initial_value = values(4)
         if (first_col) initial_value = 0.5_dp * (values(4) + values(2))
         if (last_col) initial_value = 0.5_dp * (values(4) + values(3))
      else
         initial_value = values(1)
         if (first_col) initial_value = values(2)
         if (last_col) initial_value = values(3)
      end if
   end function

   subroutine parse_args()
      character(len=256) :: arg, name, val
      integer :: n, nvalues, ios, eq
      real(dp) :: v
      nvalues = 0
      n = 1
      do while (n <= command_argument_count())
         call get_command_argument(n, arg)
         if (arg == '-h' .or. arg == '--help') then
            if (rank == 0) call usage()
            call MPI_Finalize()
            stop
         else if (arg == '--no-send') then
            send = .false.
         else if (arg(1:2) == '--') then
            eq = index(arg, '=')
            if (eq > 0) then
               name = arg(:eq - 1)
               val = arg(eq + 1:)
            else
               name = arg
               n = n + 1
               if (n > command_argument_count()) &
                  call fail('option ' // trim(name) // ' needs a value')
               call get_command_argument(n, val)
            end if
            select case (trim(name))
            case ('--nx')
               nx = positive_int(val)
            case ('--ny')
               ny = positive_int(val)
            case ('--steps')
               steps = positive_int(val)
            case default
               call fail("unknown option '" // trim(arg) // "'")
            end select
         else
            read (arg, *, iostat=ios) v
            if (ios /= 0) call fail("not a number: '" // trim(arg) // "'")
            if (v /= v .or. abs(v) > huge(v)) &
               call fail("not a finite number: '" // trim(arg) // "'")
            nvalues = nvalues + 1
            if (nvalues <= 6) values(nvalues) = v
         end if
         n = n + 1
      end do
      if (nvalues /= 6) call fail('expected 6 parameter values (initial, left, right, top, ' // &
                                  'bottom, diffusivity)')
      if (values(6) <= 0) call fail('diffusivity must be > 0')
      if (nx < 3 .or. ny < 3) call fail('--nx and --ny must be at least 3')
      if (ny < ranks) call fail('--ny must be at least the number of MPI ranks')
   end subroutine

   integer function positive_int(text)
      character(len=*), intent(in) :: text
      integer :: ios
      read (text, *, iostat=ios) positive_int
      if (ios /= 0) call fail("an option expects an integer, got '" // trim(text) // "'")
      if (positive_int < 1) call fail('options --nx, --ny, --steps must be positive')
   end function

   subroutine usage()
      print '(a)', 'usage: heat INITIAL LEFT RIGHT TOP BOTTOM DIFFUSIVITY [--nx N] [--ny N] ' // &
                   '[--steps N] [--no-send]'
      print '(a)', '  INITIAL, LEFT, RIGHT, TOP, BOTTOM: temperatures (interior at t=0, walls)'
      print '(a)', '  DIFFUSIVITY: thermal diffusivity (> 0)'
      print '(a)', '  --nx, --ny: grid points along x and y (default 100, at least 3)'
      print '(a)', '  --steps: output time steps (default 100; = study_options.nb_time_steps)'
      print '(a)', '  --no-send: compute without sending to Melissa'
   end subroutine

   subroutine fail(message)
      character(len=*), intent(in) :: message
      if (rank == 0) then
         write (error_unit, '(a)') 'heat: error: ' // message
         call usage()
      end if
      call MPI_Abort(MPI_COMM_WORLD, 2)
   end subroutine
end program heat

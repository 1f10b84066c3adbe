"""The one exception hierarchy of Melissa. Messages say what was wrong, where, and what to do."""


class MelissaError(Exception):
    """Base of every error Melissa raises on purpose."""


class ConfigError(MelissaError):
    """The study configuration is missing, unreadable or invalid."""


class ProtocolError(MelissaError):
    """A message on the wire is malformed, unauthenticated or out of contract."""


class ClientError(MelissaError):
    """The client API was misused or could not talk to the server."""


class SubmissionError(MelissaError):
    """A scheduler refused or failed to run a job."""


class SchedulerError(MelissaError):
    """A scheduler command (sbatch, squeue, oarstat, ...) failed after its retries, or answered
    something Melissa cannot read."""


class CheckpointError(MelissaError):
    """A server checkpoint cannot be written, read or used (corrupt, other server layout)."""


class StudyError(MelissaError):
    """The study as a whole failed (server died, nothing completed, ...)."""

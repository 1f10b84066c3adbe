"""melissa-monitor: a live terminal view of a running study, read from its launcher's status API."""

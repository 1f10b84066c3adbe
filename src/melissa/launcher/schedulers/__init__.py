"""Scheduler backends behind one small protocol (base.Scheduler): local processes, ..."""

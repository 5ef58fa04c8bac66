"""The embedded stack: a supervisor that starts, health-checks and stops local services.

Services are child processes whose pid, address and start time are recorded under
`TAPEFLOW_HOME/run/`, so `status` and `down` work from any other shell.
"""

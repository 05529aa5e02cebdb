"""Jobs: the state machine and the job service used by every API."""

"""The Engine and what it runs: the decode loop, runs, the bounded store, jobs and the model-backed views."""

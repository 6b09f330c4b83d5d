"""What the sfmlops DAGs share: how tasks reach sfmlops, task defaults, failure records.

Nothing here does I/O at import: the DAG processor imports these modules on every parse.
Settings that shape the DAG (how commands run, retries, timeouts) come from environment
variables, read without touching the network or the metadata database; everything a task
needs at run time (API URL and token, pod image) is resolved when the task runs.
"""

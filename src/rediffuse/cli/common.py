"""What every verb module of the command line shares: the program's name and exit codes."""

PROG = "rediffuse"
INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT)

"""The command line (`python -m engine ...`): one module per command, argument parsing and printing;
the work is done by the library (engine/), the sessions, the what-if service, the server and tune."""

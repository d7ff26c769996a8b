"""Running a workload through an Engine as a recorded run: signals, progress, the recorder; with a
real model (built by engine.engine_args) or a cost model on a virtual clock. The command line,
the what-if service and tune use it."""

"""`python -m engine tune`: the configuration that serves a workload best within per-request latency
targets, searched with the simulator (the same Scheduler on a virtual clock, the what-if service's
cost model when the workload is a recorded run).

One concept per file: slo (targets, goodput, attainment), space (the grid of --search values),
early_stop (sound pruning while a point simulates), evaluate (one point), backends (where points
run: in process, a process pool, a Ray cluster), search (the whole search and the recommendation),
pareto (the throughput vs p99 frontier), source (the workload and cost model a search runs on),
materialize and validate (a point as a normal recorded run, a real run of the winner), report and
cli (what a user reads and types).
"""

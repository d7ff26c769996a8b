"""The what-if service: a recorded run as the base of a prediction (its exact requests, its
configuration, a cost model fitted to its steps), the trust figures shown before every prediction
(held-out fit quality, extrapolation warnings, the measured track record), and validation by a
real run. The command line, the dashboard and `tune` use it; it uses the engine and storage."""

"""Defaults of the audit, importable without numpy so that ``faceaudit --help`` stays instant."""

#: Bootstrap resamples: 1,000 keeps the Monte Carlo error of a 95% percentile bound near 0.002 for accuracy.
DEFAULT_N_BOOT = 1000
#: Confidence level of every interval.
DEFAULT_CI = 0.95
#: Groups smaller than this are shown but never ranked as worst nor judged by gates (a 30-image group's
#: accuracy has a 95% interval about ±0.15 wide).
DEFAULT_MIN_GROUP_SIZE = 30
#: What an inconclusive gate does to the exit code.
DEFAULT_INCONCLUSIVE = "fail"

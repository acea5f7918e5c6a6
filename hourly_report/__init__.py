"""hourly-report: one OpsRamp performance-utilization analysis per hour."""

__version__ = "0.1.0"

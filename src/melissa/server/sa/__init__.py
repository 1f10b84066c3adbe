"""The sensitivity-analysis server: iterative statistics (stats/), Sobol' pick-freeze groups
(groups.py) and the results written as files (output.py)."""

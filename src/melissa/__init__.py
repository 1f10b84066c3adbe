"""Melissa: online ensemble studies (sensitivity analysis, deep surrogates) without intermediate files.

Kept import-free on purpose: `import melissa.client` must stay light (stdlib, NumPy, pyzmq only).
"""

__version__ = "0.1.0"

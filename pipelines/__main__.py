"""`python -m pipelines ...`: the CLI of the checkout it runs in.

dvc.yaml stages call this rather than the installed `w4rl` script: Python puts the working
directory first on sys.path, so a DVC experiment (`dvc exp run`, queued runs in their own temporary
workspace) runs its own pipelines/ and w4rl_core/, not the main checkout's editable install.
"""

from pipelines.cli import main

main()

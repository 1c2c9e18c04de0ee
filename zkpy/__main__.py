"""`python -m zkpy`: the same commands as the `zkpy` script."""

from zkpy.cli import main

main()

"""`python -m plush` is the same as the `plush` command."""

from plush.cli import main

main()

"""`python -m reference ...` is the `minifaas` command."""

from reference.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

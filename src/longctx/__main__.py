"""`python -m longctx` is the same as the `longctx` console script."""

from longctx.cli import main

raise SystemExit(main())

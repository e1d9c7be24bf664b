"""`python -m benchmarks.reliability [--scale test|bench|soak]` (`make soak`)."""

from benchmarks.reliability import main

raise SystemExit(main())

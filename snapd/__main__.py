from snapd.cli import main

raise SystemExit(main())

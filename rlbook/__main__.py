from rlbook.cli import main

raise SystemExit(main())

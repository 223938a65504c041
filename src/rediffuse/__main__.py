from rediffuse.cli import main

raise SystemExit(main())

from consult.cli.main import main

raise SystemExit(main())

from server.engine.native import main

raise SystemExit(main())

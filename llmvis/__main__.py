from llmvis.cli import main

raise SystemExit(main())

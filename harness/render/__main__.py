import sys

from harness.render.redraw import main

sys.exit(main())

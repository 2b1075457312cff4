"""The ldm_hub Gradio demo, Space-style: `python demo/app.py [--model DIR_OR_REPO ...] [--port P] [--share]`.

The app's code ships in the package (ldm_hub.demo), so `ldm-hub demo` runs the same app from an installed wheel;
its options are `ldm-hub demo`'s (ldm_hub.commands.demo).
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from ldm_hub.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())

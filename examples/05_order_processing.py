"""The order-processing demo (``polybus demo``): orders fan out to billing and e-mail, one is retried.

Run on any broker: POLYBUS_URL=redis://localhost:6379 python examples/05_order_processing.py
The code is in polybus/demo.py, so that ``polybus demo`` runs the same thing.
"""

import asyncio
import os
import sys

from polybus.demo import run_demo

if __name__ == "__main__":
    sys.exit(asyncio.run(run_demo(os.environ.get("POLYBUS_URL", "memory://"))))

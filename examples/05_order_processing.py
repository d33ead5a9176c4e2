"""The order-processing demo (``polybus demo``): orders fan out to billing and e-mail, one is retried.

Run on any broker: POLYBUS_URL=redis://localhost:6379 python examples/05_order_processing.py (or --url URL)
The code is in polybus/demo.py, so that ``polybus demo`` runs the same thing.
"""

import argparse
import asyncio
import os
import sys

from polybus.demo import run_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    code = asyncio.run(run_demo(parser.parse_args().url))
    print("OK" if code == 0 else "FAILED")
    sys.exit(code)

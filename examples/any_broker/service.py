"""The service of example 10: it names its topics logically and knows nothing of its broker.

Run it on its own from this directory: ``polybus run service:app`` (polybus.toml here says the
broker, the topic names and the concurrency; ``POLYBUS_URL`` or ``--url`` override the url).
"""

import asyncio

from pydantic import BaseModel

import polybus


class Signup(BaseModel):
    user: str
    email: str


app = polybus.App()
welcomed: list[str] = []
running = peak = 0


@app.subscribe("signups", group="welcome", concurrency=1)  # polybus.toml raises the concurrency
async def welcome(signup: Signup) -> None:
    global running, peak
    running += 1
    peak = max(peak, running)
    await asyncio.sleep(0.05)  # sending the welcome e-mail
    running -= 1
    welcomed.append(signup.user)

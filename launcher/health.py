"""The vLLM server's `GET /health`, asked the same way by the supervisor and the trainer. Stdlib only."""

from __future__ import annotations

import enum
import time
import urllib.error
import urllib.request

from launcher.server_auth import token_header


class Health(str, enum.Enum):
    OK = "ok"  # 200
    REFUSED = "refused"  # nothing listens: the server process is gone
    ERROR = "error"  # a timeout or a non-200 answer: a stuck or busy server (judged over a grace period)


def check(url: str, timeout_s: float = 2.0) -> Health:
    """One `GET <url>/health` (no trailing slash: vLLM answers only that)."""
    try:
        request = urllib.request.Request(f"{url.rstrip('/')}/health", headers=token_header())  # the job's token, if any
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Health.OK if response.status == 200 else Health.ERROR
    except urllib.error.HTTPError:
        return Health.ERROR
    except urllib.error.URLError as error:
        return Health.REFUSED if isinstance(error.reason, ConnectionRefusedError) else Health.ERROR
    except ConnectionRefusedError:
        return Health.REFUSED
    except (OSError, ValueError):
        return Health.ERROR


def wait_healthy(url: str, timeout_s: float, every_s: float = 1.0, try_timeout_s: float = 10.0) -> float:
    """Ask until 200; the seconds waited. TimeoutError naming the last answer after timeout_s."""
    start = time.monotonic()
    while True:
        answer = check(url, try_timeout_s)
        if answer is Health.OK:
            return time.monotonic() - start
        if time.monotonic() - start >= timeout_s:
            raise TimeoutError(f"the vLLM server at {url} is not healthy after {timeout_s:g} s "
                               f"(last /health: {answer.value})")
        time.sleep(every_s)

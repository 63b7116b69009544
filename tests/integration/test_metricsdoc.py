# -*- test-case-name: tests.integration.test_metricsdoc -*-
"""
The scrape shown in C{docs/operator.md} ("Metrics and health check") is
what its command prints: a real C{twistd smtpd --metrics} with the default
delivery, after two messages (one over STARTTLS), filtered by the grep
commands the page shows, has the series the page shows, no more and no
fewer, and the small counts it shows.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from tests.integration.helpers import (
    RECIPIENT,
    SENDER,
    START_TIMEOUT,
    ServerTestCase,
    freePort,
    message,
    unverifiedContext,
)
from tests.integration.test_metrics import samples, scrape

OPERATOR = Path(__file__).resolve().parents[2] / "docs" / "operator.md"
_COMMAND = "$ curl -s 127.0.0.1:9101/metrics"


def documentedScrape(page: str) -> tuple[list[str], dict[str, str]]:
    """
    The scrape example of the operator's guide.

    @return: The patterns of the C{grep -v} commands its pipeline runs, and
        the lines it shows, as series (name and labels) to value.
    """
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(_COMMAND))
    patterns = []
    for stage in lines[start].split("|")[1:]:
        words = shlex.split(stage)
        if words[:2] != ["grep", "-v"] or len(words) != 3:
            raise ValueError(f"not a grep -v stage: {stage!r}")
        patterns.append(words[2])
    shown = {}
    for line in lines[start + 1 :]:
        if line.startswith(("$", "```")):
            break
        series, value = line.rsplit(" ", 1)
        shown[series] = value
    return patterns, shown


def filtered(text: str, patterns: list[str]) -> dict[str, str]:
    """
    The lines of C{text} that no pattern matches, as C{grep -v} keeps
    them, as series to value.
    """
    kept = {}
    for line in text.splitlines():
        if line and not any(re.search(pattern, line) for pattern in patterns):
            series, value = line.rsplit(" ", 1)
            kept[series] = value
    return kept


class OperatorScrapeTests(ServerTestCase):
    def test_scrapeAsShown(self) -> None:
        """
        The series left by the page's pipeline are the page's; each count
        the page shows as a small whole number is the count scraped.
        """
        patterns, shown = documentedScrape(OPERATOR.read_text(encoding="utf-8"))
        metricsPort = freePort()
        self.startServer("--metrics", f"tcp:{metricsPort}:interface=127.0.0.1")
        self.server.waitForLog(f"metrics: /metrics and /healthz on 127.0.0.1:{metricsPort}")
        client = self.smtp()
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(1)), {})
        client.quit()
        client = self.smtp()
        client.starttls(context=unverifiedContext())
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(2)), {})
        client.quit()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = scrape(metricsPort)[1]
            found = samples(text)
            done = found.get(("smtpd_sessions_total", (("outcome", "message"),))) == 2
            if (done and found.get(("smtpd_connections_open", ())) == 0) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(0.05)
        scraped = filtered(text, patterns)
        self.assertEqual(sorted(scraped), sorted(shown))
        counts = {s: v for s, v in shown.items() if re.fullmatch(r"\d\.0", v)}
        self.assertEqual({s: scraped[s] for s in counts}, counts)
        self.stopServer()

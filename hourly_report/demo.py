"""``hourly-report demo``: the main job end to end against an in-process sandbox.

Everything is throw-away: a temporary directory holds the config and the ledger,
and the sandbox listens on a free port of 127.0.0.1.  The commands run through
the real command line (error mapping, ledger, HTTP client and all).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hourly_report.sandbox import Sandbox

DEMO_SECRET = "demo-secret-not-real"  # noqa: S105 - the sandbox's own throw-away credential

CONFIG_TEMPLATE = """\
[opsramp]
base_url = {base_url}
tenant_id = demo-tenant
client_id = demo-client
client_secret = ${{HOURLY_REPORT_DEMO_SECRET}}
timeout_seconds = 10

[ledger]
path = ledger.sqlite3

[retry]
backoff_seconds = 0.1
max_backoff_seconds = 1
"""


def run_demo(echo: Callable[[str], None]) -> int:
    """Run the demo, printing to ``echo``; return the exit status (0 when all went well)."""
    import os

    from hourly_report.cli import cli

    with (
        tempfile.TemporaryDirectory(prefix="hourly-report-demo-") as tmp,
        Sandbox(
            tenant_id="demo-tenant", client_id="demo-client", client_secret=DEMO_SECRET
        ) as server,
    ):
        config = Path(tmp) / "config.ini"
        config.write_text(CONFIG_TEMPLATE.format(base_url=server.base_url), encoding="utf-8")
        config.chmod(0o600)
        os.environ["HOURLY_REPORT_DEMO_SECRET"] = DEMO_SECRET
        yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
        echo(f"OpsRamp sandbox on {server.base_url}; throw-away config and ledger in {tmp}\n")
        info = ["--log-level", "INFO"]  # the demo shows what cron would keep quiet about
        steps = [
            [*info, "run"],
            [*info, "run"],
            ["backfill", "--date", yesterday],
            ["status", "--date", yesterday],
            [*info, "cleanup"],
            ["status", "--date", yesterday],
        ]
        worst = 0
        for args in steps:
            echo(f"$ hourly-report {' '.join(args)}")
            code = cli.main(args=["--config", str(config), *args], standalone_mode=False)
            code = code if isinstance(code, int) else 0
            worst = max(worst, code)
            echo(f"(exit status {code})\n")
        requests = sum(1 for r in server.state.requests if r.endpoint != "control")
        live = len(server.state.analyses)
        echo(
            f"The sandbox saw {requests} requests on {server.state.connections} connections "
            f"(one per command that had work to do). {live} "
            f"{'analysis remains' if live == 1 else 'analyses remain'}: the last hour's, which the "
            "next nightly cleanup deletes once today has ended."
        )
        return worst

"""The language must not pull in the network runtime."""

import subprocess
import sys


def test_language_imports_no_network_code():
    code = (
        "import sys, rulesengine, rulesengine.lang.api, rulesengine.document, rulesengine.ruletest, "
        "rulesengine.dryrun\n"
        "bad = [m for m in sys.modules if m.startswith(('pynetdicom', 'rulesengine.runtime', 'watchdog'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

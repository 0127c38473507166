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


def test_the_console_imports_no_dicom_network_code():
    """The console reads the journal and the storage folder; it is no DICOM peer, and a router
    that restarts must not take it down."""
    code = (
        "import sys, rulesengine.console.app, rulesengine.cli.console\n"
        "bad = [m for m in sys.modules if m.startswith(('pynetdicom', 'watchdog', 'rulesengine.runtime.service', "
        "'rulesengine.runtime.listener', 'rulesengine.runtime.worker'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

"""Rewrite the output under each `$ command` of the ```console blocks in docs/*.md with
what the command prints now. Run it after a deliberate change of output, then read the
diff: tests/test_docs_console.py fails until the pages match the commands again."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_docs_console as console  # noqa: E402


def main() -> int:
    import shutil
    import tempfile
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        files = dict(console.FILE.findall(text))

        def refresh(match):
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                shutil.copytree(ROOT / "rules", tmp / "scratch" / "rules")
                shutil.copytree(ROOT / "examples", tmp / "scratch" / "examples")
                lines = []
                for command, output in console.run_block(match.group(1), files, tmp / "scratch", tmp):
                    lines.append(f"$ {command}")
                    if output:
                        lines.append(output)
                return "```console\n" + "\n".join(lines) + "\n```"

        page.write_text(console.BLOCK.sub(refresh, text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

import sys

from .cli import main

if __name__ == "__main__":  # the router's worker process is spawned and imports this module again
    sys.exit(main())

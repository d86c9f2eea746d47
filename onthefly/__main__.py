"""``python -m onthefly`` is the ``onthefly`` command."""

from .cli.main import main

if __name__ == "__main__":
    main()

"""``python -m commandbus`` runs the command line."""

from commandbus.cli.main import main

if __name__ == "__main__":
    main()

"""Allow ``python -m hourly_report``."""

from hourly_report.cli import main

if __name__ == "__main__":
    main()

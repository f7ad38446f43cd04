"""Reporting: run directories → tables (`results`), exports, report.md with figures, the comparison
over runs, and where each run's values came from (`provenance`)."""

"""The comparison report: headline table, figures, model outputs and provenance in one HTML file.

`build.build_report` is the entry point; scripts/report.py calls it from Snakemake.
"""

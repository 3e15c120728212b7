"""Thin infrastructure for the projects: data, runtime, checkpoints, CLI, logs, plots, metrics.

Nothing here is what a project is about. Import the submodules directly
(`from shared.cli import cli_main`); importing the package itself does nothing.
"""

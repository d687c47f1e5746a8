"""One module per ``ardet`` subcommand; see ``pipeline.cli.COMMANDS``."""

"""CLI subcommands beyond `build`, one module each; archc.cli registers them."""

"""``python -m wattvisor.cli``: the same command as ``wattvisor``."""

from wattvisor.cli.main import main

main()

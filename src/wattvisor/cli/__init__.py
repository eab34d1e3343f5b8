"""The ``wattvisor`` command (Typer + Rich): a thin client of the service layer."""

"""Fails to import on purpose: the executor must log it and load the other modules."""

import this_module_does_not_exist  # noqa: F401

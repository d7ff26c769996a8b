"""The one base class for errors a user can act on from the message alone."""


class UserError(Exception):
    """Bad input (flags, files, configs, databases, model paths): the CLI prints the message on one
    line and exits with status 2, without a traceback."""

"""The one exception users can cause; the CLI prints it as a single line."""


class FeatinvError(Exception):
    """A problem with the user's input or environment, worded for the user. Exit code 1."""

    exit_code = 1


class UsageError(FeatinvError):
    """The command line itself is wrong (bad flag combination, bad value). Exit code 2."""

    exit_code = 2

"""The one exception users can cause (the CLI prints it as a single line), and notes on stderr."""
import sys

_quiet = False


def set_quiet(on: bool) -> bool:
    """-q of the running command: notes are dropped (errors never are). Returns ``on`` (a typer callback)."""
    global _quiet
    _quiet = bool(on)
    return on


def note(text: str) -> None:
    """One line a user should see but that is not an error ("featinv: note: ..."), unless -q."""
    if not _quiet:
        sys.stderr.write(f"featinv: note: {text}\n")
        sys.stderr.flush()



def counted(n: int, noun: str) -> str:
    """A count and its noun for a message: "1 image", "3 images" (never "1 images")."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


class FeatinvError(Exception):
    """A problem with the user's input or environment, worded for the user. Exit code 1."""

    exit_code = 1


class UsageError(FeatinvError):
    """The command line itself is wrong (bad flag combination, bad value). Exit code 2."""

    exit_code = 2

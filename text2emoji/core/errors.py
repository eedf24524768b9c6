"""The one exception type the CLI turns into a one-line message and exit status 1."""


class UserError(Exception):
    """Bad input from the user: a file, row or field that is wrong, a name that is unknown.

    The message must stand alone on one line and name what is wrong (file, row, field, the
    valid choices). The CLI prints it as ``text2emoji: error: <message>`` and exits 1.
    """

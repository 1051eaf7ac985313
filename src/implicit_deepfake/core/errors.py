"""The one exception type for errors a user can cause and fix."""


class DeepfakeError(Exception):
    """Bad input or configuration. The message names the file or field and says what to do."""

"""Python stack dumps on request: the launcher's entry points (and vLLM's processes, through the
`launcher_stacks` general plugin) register faulthandler so the supervisor can ask a hung process
where it is."""


def install() -> None:
    """Idempotent; safe to call in any process."""

"""A user-defined judge for the `python:` judge tests."""


def mentions_reference(answer: str, reference: str | None, prompt: str) -> float | None:
    if reference is None:
        return None
    return float(reference.lower() in answer.lower())


def out_of_range(answer: str, reference: str | None, prompt: str) -> float:
    return 3.0


def fails_on_marked(answer: str, reference: str | None, prompt: str) -> float:
    """A judge that breaks on answers containing "BROKEN" while $JUDGE_BROKEN is set (an outage), else scores 1."""
    import os

    if "BROKEN" in answer and os.environ.get("JUDGE_BROKEN"):
        raise ConnectionError("judge service unavailable")
    return 1.0

"""A user-defined judge for the `python:` judge tests."""


def mentions_reference(answer: str, reference: str | None, prompt: str) -> float | None:
    if reference is None:
        return None
    return float(reference.lower() in answer.lower())


def out_of_range(answer: str, reference: str | None, prompt: str) -> float:
    return 3.0

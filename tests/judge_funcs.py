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


IN_FLIGHT = {"now": 0, "most": 0}


async def slow_service(answer: str, reference: str | None, prompt: str) -> float:
    """An async judge (e.g. one calling a grading service): scores 1 after a short wait, counting calls in flight."""
    import asyncio

    IN_FLIGHT["now"] += 1
    IN_FLIGHT["most"] = max(IN_FLIGHT["most"], IN_FLIGHT["now"])
    await asyncio.sleep(0.05)
    IN_FLIGHT["now"] -= 1
    return 1.0


def interrupted_on_marked(answer: str, reference: str | None, prompt: str) -> float:
    """Scores 1; the user presses Ctrl-C while the judge is on an answer containing "STOP"."""
    if "STOP" in answer:
        raise KeyboardInterrupt
    return 1.0

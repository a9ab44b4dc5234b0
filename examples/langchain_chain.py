"""A LangChain chain whose model step is chosen per input by the prefill router.

    python examples/langchain_chain.py --bundle bundles/llmrouter

Offline: every bundle target is a fake chat model that answers with its own name. Replace the
mapping with real chat models (ChatOpenAI, ChatLiteLLM, ...), keyed by the bundle's target names - or with model
strings langchain's init_chat_model builds, e.g.
{"llama-3.1-8b-instruct": "litellm:together_ai/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", ...}.
"""

from __future__ import annotations

import argparse

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_integration import PrefillRouterRunnable
from litellm_prefill_router import load_bundle

QUESTIONS = [
    "If a train travels 120 km in 1.5 hours, what is its average speed in km/h?",
    "Who painted the ceiling of the Sistine Chapel?",
    "Write a Python function that returns the n-th Fibonacci number.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--preset", default=None)
    args = ap.parse_args()
    targets = load_bundle(args.bundle).manifest.target_names
    models = {t: FakeListChatModel(responses=[f"(answer from {t})"] * 100) for t in targets}
    router = PrefillRouterRunnable(runnables=models, bundle=args.bundle, preset=args.preset)
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
    chain = prompt | router | StrOutputParser()
    for q in QUESTIONS:
        decision = router.decide(prompt.invoke({"question": q}))
        print(f"{q[:60]:<62} -> {chain.invoke({'question': q})}  "
              f"[p={decision.p_correct[decision.target]:.2f}, {decision.policy.kind}={decision.policy.value}]")


if __name__ == "__main__":
    main()

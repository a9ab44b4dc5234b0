"""The `prefill-router` subcommands, by what they work on (the parser is in `litellm_prefill_router.cli`)."""

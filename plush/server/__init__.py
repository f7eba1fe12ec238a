"""The Plush server: the gRPC companion service, its brain (persona, memory, LLM router), speech out and storage."""

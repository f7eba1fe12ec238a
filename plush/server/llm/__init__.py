"""The companion's brain: one streaming interface, two backends (Gemini, local Llama) and a router between them."""

"""The plush itself: the button, microphone and speaker, speech to text, and the client of the Plush server."""

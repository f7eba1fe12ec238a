"""The speech layer shared by the plush and the server.

Speech to text (faster-whisper), text to speech (Piper), audio formats and resampling, and the model store that
knows which models exist, where they live on disk and how to fetch them. Heavy libraries are imported only
where a model is loaded, so each side installs only what it uses.
"""

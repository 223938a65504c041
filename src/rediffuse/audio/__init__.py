"""Sound as numbers: the STFT, mel filterbanks and Griffin-Lim (spectral), and the log-mel codec (codec)."""

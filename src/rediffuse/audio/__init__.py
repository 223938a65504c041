"""Sound as numbers: the STFT, mel filterbanks and Griffin-Lim (spectral), phase from magnitude (phase), and the
log-mel codec (codec)."""

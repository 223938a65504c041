"""Models with closed-form answers, the tests' independent truth: Gaussian mixtures with exact denoisers and
densities, and an exactly solvable Markov-chain source for tokens."""

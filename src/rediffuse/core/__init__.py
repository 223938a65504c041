"""The mathematics every model shares: noise schedules, the denoiser and its preconditionings, the losses,
classifier-free guidance, EMA, and the masked-diffusion and consistency-model formulas."""

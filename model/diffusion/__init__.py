"""Diffusion: the noise schedule, the DDIM scheduler and the sampler that turns noise into soft masks."""

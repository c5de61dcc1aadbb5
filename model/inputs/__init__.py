"""What goes into the network: image preprocessing, flat-field correction, prompts, kept pixels and size and memory limits."""
